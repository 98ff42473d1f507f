//! No code: this crate's Cargo.toml asks for the features both build phases share (see there).
