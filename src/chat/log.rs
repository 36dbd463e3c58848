//! The optional chat log: every message and notice appended to a file as JSON lines, for
//! streamers who turn it on (off by default: the party's chat is gone when it ends).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::Published;

/// Writes what `live` carries to `path` until `stop` is cancelled, the hub is gone, or the
/// file cannot be written.
pub(super) async fn run(
    path: PathBuf,
    mut live: broadcast::Receiver<Arc<Published>>,
    stop: CancellationToken,
) {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await;
    let mut file = match file {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("cannot open the chat log {}: {e}", path.display());
            return;
        }
    };
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            next = live.recv() => next,
        };
        match next {
            Ok(p) if p.event.is_backlogged() => {
                let mut line = p.json.to_vec();
                line.push(b'\n');
                if let Err(e) = file.write_all(&line).await {
                    tracing::error!("chat log {}: {e}; logging stops", path.display());
                    return;
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                tracing::warn!("chat log fell behind; {n} events not logged");
            }
            Err(RecvError::Closed) => break,
        }
    }
    // Lines written so far reach the disk before the process exits.
    if let Err(e) = file.flush().await {
        tracing::error!("chat log {}: {e}", path.display());
    }
}
