//! The data plane: store URLs to object_store instances, and streaming blob copies with digest checks.
//! This is the one module that touches object_store.

mod body;
pub mod faults;
pub mod objects;
pub mod oci;
pub mod progress;
pub mod retry;
pub mod stores;

pub use body::body_stream;
pub use object_store;
pub use stores::{CopyResult, DataError, StoreSet, copy_blob, open_store};
