//! Reading a `get`'s body as a stream of large chunks.
//!
//! object_store streams a local file (`file://` stores) in 8 KiB chunks, each read on a blocking task of its
//! own: for a 1 GiB restore that is 131,072 thread hand-offs and reads, which cost more than hashing the bytes.
//! Here a local file is read on one blocking thread in [`CHUNK`]-sized reads, handed over through a small
//! bounded channel (memory stays at a few chunks); other payloads stream as the store gives them.

use std::io::{Read, Seek, SeekFrom};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::{GetResult, GetResultPayload};

/// Size of each read of a local file: large enough that per-read costs vanish, small enough to keep memory flat.
pub(crate) const CHUNK: usize = 1 << 20;

/// Chunks read ahead of the consumer: the reader keeps the disk busy while the consumer hashes the last one.
const READ_AHEAD: usize = 4;

/// The body of `got`, as `GetResult::into_stream` gives it but in [`CHUNK`]-sized pieces for local files.
pub fn body_stream(got: GetResult) -> BoxStream<'static, object_store::Result<Bytes>> {
    let range = got.range.clone();
    match got.payload {
        GetResultPayload::File(mut file, path) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<object_store::Result<Bytes>>(READ_AHEAD);
            tokio::task::spawn_blocking(move || {
                let fail = |e: std::io::Error| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("reading {}: {e}", path.display()).into(),
                };
                if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
                    let _ = tx.blocking_send(Err(fail(e)));
                    return;
                }
                let mut left = range.end - range.start;
                while left > 0 {
                    let want = left.min(CHUNK as u64);
                    let mut buf = Vec::with_capacity(want as usize);
                    match (&mut file).take(want).read_to_end(&mut buf) {
                        Ok(0) => {
                            let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                            let _ = tx.blocking_send(Err(fail(e)));
                            return;
                        }
                        Ok(n) => {
                            left -= n as u64;
                            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                                return; // the consumer stopped
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Err(fail(e)));
                            return;
                        }
                    }
                }
            });
            futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })
            .boxed()
        }
        GetResultPayload::Stream(stream) => stream,
    }
}
