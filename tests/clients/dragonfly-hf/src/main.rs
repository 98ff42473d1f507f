//! Downloads a model revision through Dragonfly's `hf://` backend, the calls
//! dfdaemon makes for `dfget hf://REPO --hf-revision REV -r`: `stat` of the
//! repository (its file list), then per file `stat` (its size) and `get` in
//! ranged pieces; then `exists` of the file. Prints
//! `file<TAB>name<TAB>size<TAB>pieces<TAB>exists` per file.
//!
//! Usage: dragonfly-hf-fetch BASE_URL REPO REVISION OUT_DIR PIECE_BYTES [TOKEN]

use dragonfly_api::common::v2::{HuggingFace as HuggingFaceOptions, Range};
use dragonfly_client_backend::hugging_face::HuggingFace;
use dragonfly_client_backend::{Backend, ExistsRequest, GetRequest, StatRequest};
use dragonfly_client_config::dfdaemon::Config;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

const TIMEOUT: Duration = Duration::from_secs(60);

fn stat(url: &str, options: &HuggingFaceOptions) -> StatRequest {
    StatRequest {
        task_id: "modelpack-test".into(),
        url: url.into(),
        http_header: None,
        timeout: TIMEOUT,
        client_cert: None,
        object_storage: None,
        hdfs: None,
        hugging_face: Some(options.clone()),
        model_scope: None,
        open_csg: None,
    }
}

fn exists(url: &str, options: &HuggingFaceOptions) -> ExistsRequest {
    ExistsRequest {
        task_id: "modelpack-test".into(),
        url: url.into(),
        http_header: None,
        timeout: TIMEOUT,
        client_cert: None,
        object_storage: None,
        hdfs: None,
        hugging_face: Some(options.clone()),
        model_scope: None,
        open_csg: None,
    }
}

fn get(url: &str, options: &HuggingFaceOptions, range: Range, piece: usize) -> GetRequest {
    GetRequest {
        task_id: "modelpack-test".into(),
        piece_id: format!("piece-{piece}"),
        url: url.into(),
        range: Some(range),
        http_header: None,
        timeout: TIMEOUT,
        client_cert: None,
        object_storage: None,
        hdfs: None,
        hugging_face: Some(options.clone()),
        model_scope: None,
        open_csg: None,
    }
}

async fn run(args: &[String]) -> Result<(), String> {
    let (base, repo, revision, out, piece) = (&args[0], &args[1], &args[2], &args[3], &args[4]);
    let piece: u64 = piece.parse().map_err(|e| format!("PIECE_BYTES: {e}"))?;
    let options = HuggingFaceOptions {
        token: args.get(5).cloned(),
        revision: revision.clone(),
        base_url: Some(base.clone()),
    };
    let backend = HuggingFace::new(Arc::new(Config::default())).map_err(|e| e.to_string())?;
    let repo_url = format!("hf://{repo}");
    // dfget hf://REPO -r: ListTaskEntries, which is stat() of the repository.
    let listing = backend
        .stat(stat(&repo_url, &options))
        .await
        .map_err(|e| format!("stat {repo_url}: {e}"))?;
    for entry in listing.entries {
        let name = entry.url.strip_prefix(&format!("{repo_url}/")).unwrap_or(&entry.url).to_string();
        // The download task of each file: stat() for its size, then get() piece by piece.
        let info = backend.stat(stat(&entry.url, &options)).await.map_err(|e| e.to_string())?;
        let size = info.content_length.ok_or(format!("{name}: no content length"))?;
        let mut data = Vec::with_capacity(size as usize);
        let mut pieces = 0;
        let mut start = 0;
        while start < size {
            let length = piece.min(size - start);
            let request = get(&entry.url, &options, Range { start, length }, pieces);
            let mut response = backend.get(request).await.map_err(|e| e.to_string())?;
            if !response.success {
                return Err(format!("{name} piece {pieces}: {:?}", response.error_message));
            }
            let before = data.len();
            response.reader.read_to_end(&mut data).await.map_err(|e| e.to_string())?;
            if (data.len() - before) as u64 != length {
                return Err(format!("{name} piece {pieces}: {} bytes, not {length}", data.len() - before));
            }
            start += length;
            pieces += 1;
        }
        let target = std::path::Path::new(out).join(&name);
        tokio::fs::create_dir_all(target.parent().unwrap()).await.map_err(|e| e.to_string())?;
        tokio::fs::write(&target, &data).await.map_err(|e| e.to_string())?;
        // exists() of the file: a HEAD of its resolve URL at the revision.
        let found = backend.exists(exists(&entry.url, &options)).await.map_err(|e| e.to_string())?;
        println!("file\t{name}\t{size}\t{pieces}\t{found}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!("usage: dragonfly-hf-fetch BASE_URL REPO REVISION OUT_DIR PIECE_BYTES [TOKEN]");
        return ExitCode::from(2);
    }
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(1)
        }
    }
}
