//! The command traits, for `use redcore::prelude::*`: [`Commands`] (what
//! every client does) and the typed helpers of each kind of value.
//!
//! ```no_run
//! use redcore::prelude::*;
//!
//! async fn greet(client: &impl Commands) -> Result<Option<String>, redcore::Error> {
//!     client.set("greeting", "hello").await?;
//!     client.get("greeting").await
//! }
//! ```

pub use crate::cluster::{ClusterCommands, ScanCommands};
pub use crate::commands::{
    CacheCommands, Commands, HashCommands, KeyCommands, ListCommands, PubSubCommands,
    ScriptCommands, SetCommands, SortedSetCommands, StreamCommands, StringCommands,
};
pub use crate::pubsub::Subscribe;
