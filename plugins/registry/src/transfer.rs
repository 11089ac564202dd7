//! Getting one blob into the target: skip it when the target has it, mount it when the registry can, else
//! stream it in chunks whose progress is journaled, so a resumed step continues an upload where it stopped.

use std::io::Read;

use respawn_plugin_sdk::{Failure, log, progress, state};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::registry::Registry;
use crate::source::Source;

/// The state key of the upload in flight.
const UPLOAD_KEY: &str = "upload";

/// An upload in flight, journaled after every chunk the registry accepted.
#[derive(Debug, Serialize, Deserialize)]
struct Upload {
    repo: String,
    digest: Digest,
    /// Where to continue; it carries the registry's own upload state.
    url: String,
    offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Present,
    Mounted,
    Copied { bytes: u64, resumed_at: u64 },
}

pub struct Transfer<'a> {
    pub target: &'a mut Registry,
    pub repo: &'a str,
    pub chunk: u64,
    /// Repositories of the target already holding a blob (this step put it there), to mount from.
    pub known: &'a mut std::collections::HashMap<Digest, String>,
}

impl Transfer<'_> {
    pub fn blob(&mut self, source: &mut dyn Source, blob: &Descriptor) -> Result<Outcome, Failure> {
        let digest = &blob.digest;
        if let Some(size) = self.target.blob_size(self.repo, digest)? {
            if size != blob.size && size != 0 {
                return Err(Failure::verification_failed(format!(
                    "{}/{}: blob {digest} is there with {size} bytes, the manifest says {}",
                    self.target.host, self.repo, blob.size
                )));
            }
            self.known.insert(digest.clone(), self.repo.to_string());
            return Ok(Outcome::Present);
        }
        // A mount from a repository of the same registry that has it.
        let from = self.known.get(digest).cloned().or_else(|| {
            source
                .mountable()
                .filter(|(host, _)| *host == self.target.host)
                .map(|(_, r)| r)
        });
        let mut started = None;
        if let Some(from) = from.filter(|f| f != self.repo) {
            match self.target.start_upload(self.repo, Some((digest, &from)))? {
                None => {
                    log::debug(&format!("{digest}: mounted from {from}"));
                    self.known.insert(digest.clone(), self.repo.to_string());
                    return Ok(Outcome::Mounted);
                }
                Some(url) => started = Some(url),
            }
        }
        let outcome = self.upload(source, blob, started)?;
        self.known.insert(digest.clone(), self.repo.to_string());
        Ok(outcome)
    }

    fn upload(
        &mut self,
        source: &mut dyn Source,
        blob: &Descriptor,
        started: Option<String>,
    ) -> Result<Outcome, Failure> {
        let digest = &blob.digest;
        let journaled: Option<Upload> = state::get(UPLOAD_KEY)
            .and_then(|v| serde_json::from_str(&v).ok())
            .filter(|u: &Upload| u.digest == *digest && u.repo == self.repo);
        let (mut url, mut offset) = match journaled {
            Some(upload) => match self.target.upload_status(self.repo, &upload.url)? {
                Some((at, url)) if at == upload.offset => {
                    log::info(&format!(
                        "{digest}: continuing the upload at byte {at} of {} (journaled by an earlier attempt)",
                        blob.size
                    ));
                    (url, at)
                }
                other => {
                    log::warn(&format!(
                        "{digest}: the registry no longer holds the upload at byte {} ({}); starting it again",
                        upload.offset,
                        match other {
                            Some((at, _)) => format!("it is at byte {at}"),
                            None => "dropped".to_string(),
                        }
                    ));
                    (self.fresh(started)?, 0)
                }
            },
            None => (self.fresh(started)?, 0),
        };
        let resumed_at = offset;

        if offset == 0 && blob.size <= self.chunk {
            // Small: one request with the whole blob.
            let mut bytes = Vec::with_capacity(blob.size as usize);
            source
                .blob(blob, 0, blob.size)?
                .read_to_end(&mut bytes)
                .map_err(|e| cut(source, blob, &e.to_string()))?;
            if bytes.len() as u64 != blob.size {
                return Err(cut(
                    source,
                    blob,
                    &format!("{} bytes of {}", bytes.len(), blob.size),
                ));
            }
            self.target
                .finish_upload(self.repo, &url, digest, Some(bytes))?;
            return Ok(Outcome::Copied {
                bytes: blob.size,
                resumed_at: 0,
            });
        }

        let label = digest.hex().get(..12).unwrap_or_default().to_string();
        while offset < blob.size {
            let length = self.chunk.min(blob.size - offset);
            // Each chunk is its own ranged read of the source, so a resumed upload reads from where it stands.
            let piece = Exact {
                inner: source.blob(blob, offset, length)?,
                left: length,
                what: format!("{}: blob {digest} at byte {offset}", source.name()),
            };
            url = self.target.patch(self.repo, &url, offset, length, piece)?;
            offset += length;
            let upload = Upload {
                repo: self.repo.to_string(),
                digest: digest.clone(),
                url: url.clone(),
                offset,
            };
            state::set(
                UPLOAD_KEY,
                &serde_json::to_string(&upload).unwrap_or_default(),
            );
            progress::report(offset, Some(blob.size), &format!("blob {label}"));
        }
        self.target.finish_upload(self.repo, &url, digest, None)?;
        state::delete(UPLOAD_KEY);
        Ok(Outcome::Copied {
            bytes: blob.size - resumed_at,
            resumed_at,
        })
    }

    fn fresh(&mut self, started: Option<String>) -> Result<String, Failure> {
        match started {
            Some(url) => Ok(url),
            None => Ok(self
                .target
                .start_upload(self.repo, None)?
                .unwrap_or_default()),
        }
    }
}

fn cut(source: &dyn Source, blob: &Descriptor, why: &str) -> Failure {
    Failure::unavailable(format!(
        "{}: blob {} was cut short or ran long ({why}); nothing of it is marked done",
        source.name(),
        blob.digest
    ))
}

/// Exactly `left` bytes of a stream: ending early is an error rather than a short body.
struct Exact {
    inner: Box<dyn Read>,
    left: u64,
    what: String,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "{} ended {} bytes before the size its manifest declares",
                self.what, self.left
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
