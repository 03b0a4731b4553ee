//! A stand-in for a GPL-3.0 library (see ../Cargo.toml).
