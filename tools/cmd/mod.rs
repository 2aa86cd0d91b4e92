//! One module per subcommand.

pub mod bench;
pub mod build;
pub mod eval;
pub mod info;
pub mod search;
pub mod text;
pub mod verify;
