//! One module per subcommand.

pub mod bench;
pub mod build;
pub mod eval;
pub mod info;
pub mod knobs;
pub mod search;
pub mod synth;
pub mod text;
pub mod verify;
