//! Downloads files of one model revision with hf-hub's sync API and prints
//! `filename<TAB>local path` per file, so a test can compare the bytes.
//!
//! Usage: hf-hub-fetch REPO REVISION [FILE...]
//! Without FILEs it lists the revision's files with `info()` (the Hub's
//! `/api/models/{repo}/revision/{rev}`) and downloads every one.
//! The endpoint and cache come from HF_ENDPOINT and HF_HOME (`from_env`).

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: hf-hub-fetch REPO REVISION [FILE...]");
        return ExitCode::from(2);
    }
    let api = match ApiBuilder::from_env().with_progress(false).build() {
        Ok(api) => api,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(1);
        }
    };
    let repo = api.repo(Repo::with_revision(
        args[0].clone(),
        RepoType::Model,
        args[1].clone(),
    ));
    let files: Vec<String> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        match repo.info() {
            Ok(info) => {
                println!("sha\t{}", info.sha);
                info.siblings.into_iter().map(|s| s.rfilename).collect()
            }
            Err(err) => {
                eprintln!("error: info: {err}");
                return ExitCode::from(1);
            }
        }
    };
    for file in files {
        match repo.get(&file) {
            Ok(path) => println!("file\t{file}\t{}", path.display()),
            Err(err) => {
                eprintln!("error: {file}: {err}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
