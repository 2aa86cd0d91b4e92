//! One module per subcommand.

pub mod bench;
pub mod build;
pub mod eval;
pub mod info;
pub mod knobs;
pub mod memory;
pub mod rerank;
pub mod search;
pub mod serve;
pub mod synth;
pub mod text;
pub mod update;
pub mod verify;
