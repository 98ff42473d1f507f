// Empty: a build script makes cargo resolve this crate's [build-dependencies] too, so the
// crates build scripts and proc-macros use get the same features in both phases.
fn main() {}
