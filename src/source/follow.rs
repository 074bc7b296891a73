//! The one loop every source runs in: open at the saved position, read a batch, hand
//! it to the sink, and queue the new position behind a barrier; a saver task writes
//! each position once its barrier is answered, in order, off the runtime. The loop
//! owns the batch (and so the line cap) and stops where a generation ends: between
//! reads, so everything handed on has its position queued, and a reload or restart
//! neither loses nor repeats a line.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Batch, Positions, Sink, Source};

/// What every follow loop of a generation shares.
#[derive(Clone)]
pub struct Follow {
    pub positions: Arc<dyn Positions>,
    /// Cancelled when the generation ends.
    pub stop: CancellationToken,
    /// The longest record handed on, in bytes (`max_line_length`).
    pub cap: usize,
}

/// Follows `source` until it ends, the sink stops listening, or `cx.stop`. `opened`
/// is answered once the source is open (a generation is ready once all are).
pub async fn follow<S: Source, K: Sink>(
    mut source: S,
    mut sink: K,
    cx: Follow,
    opened: Option<oneshot::Sender<()>>,
) {
    let key = source.key();
    let mut saved = match &key {
        Some(k) => load(cx.positions.clone(), k.clone(), &source.name()).await,
        None => None,
    };
    tokio::select! {
        _ = cx.stop.cancelled() => return,
        () = source.open(saved.clone(), cx.cap) => {}
    }
    if let Some(opened) = opened {
        let _ = opened.send(());
    }
    let (saves, queue) = mpsc::unbounded_channel();
    let saver = save_positions(queue, cx.positions.clone(), key.clone());
    let reader = async move {
        let mut batch = Batch::new(cx.cap);
        loop {
            batch.clear();
            let more = tokio::select! {
                _ = cx.stop.cancelled() => return,
                more = source.read(&mut batch) => more,
            };
            if !batch.is_empty() && !sink.take(&batch).await {
                return;
            }
            let now = source.position();
            if key.is_some() && now.is_some() && now != saved {
                let (barrier, answered) = oneshot::channel();
                if !sink.barrier(barrier).await {
                    return;
                }
                let _ = saves.send((answered, now.clone()));
                saved = now;
            }
            if !more {
                return;
            }
        }
    };
    // The reader ends first (dropping its queue); the saver then finishes the queue.
    tokio::join!(reader, saver);
}

/// The saved position of `key`, read off the runtime.
async fn load(positions: Arc<dyn Positions>, key: Vec<u8>, name: &str) -> Option<Vec<u8>> {
    match tokio::task::spawn_blocking(move || positions.load(&key)).await {
        Ok(Ok(saved)) => saved,
        Ok(Err(e)) => {
            tracing::warn!(source = %name, error = %e, "cannot read the saved position; starting as for a source never read");
            None
        }
        Err(_) => None,
    }
}

/// Saves each position once the barrier queued with it is answered, in order. Ends
/// when the reader drops `queue` and every position before has been handled.
async fn save_positions(
    mut queue: mpsc::UnboundedReceiver<(oneshot::Receiver<()>, Option<Vec<u8>>)>,
    store: Arc<dyn Positions>,
    key: Option<Vec<u8>>,
) {
    let Some(key) = key else { return };
    let key: Arc<[u8]> = key.into();
    while let Some((answered, position)) = queue.recv().await {
        // Not answered: what came before was not saved (or the daemon stops); the
        // position stays where it was and those records are read again next time.
        let (Ok(()), Some(position)) = (answered.await, position) else {
            continue;
        };
        let (store, key) = (store.clone(), key.clone());
        let result = tokio::task::spawn_blocking(move || store.save(&key, &position)).await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "cannot save a read position");
        }
    }
}
