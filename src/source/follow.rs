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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Barrier, PositionError};
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    /// Positions in a map.
    #[derive(Default)]
    struct Saved(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

    impl Positions for Saved {
        fn load(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PositionError> {
            Ok(self.0.lock().expect("lock").get(key).cloned())
        }
        fn save(&self, key: &[u8], position: &[u8]) -> Result<(), PositionError> {
            self.0
                .lock()
                .expect("lock")
                .insert(key.to_vec(), position.to_vec());
            Ok(())
        }
    }

    /// A source that hands out scripted batches, its position the count of lines.
    struct Script {
        batches: VecDeque<Vec<&'static str>>,
        read: usize,
        opened_at: Option<Vec<u8>>,
    }

    impl Source for Script {
        fn name(&self) -> String {
            "script".into()
        }
        fn key(&self) -> Option<Vec<u8>> {
            Some(b"s".to_vec())
        }
        async fn open(&mut self, saved: Option<Vec<u8>>, _cap: usize) {
            self.opened_at = saved;
        }
        async fn read(&mut self, batch: &mut Batch) -> bool {
            match self.batches.pop_front() {
                Some(lines) => {
                    for l in lines {
                        batch.push_line(l.as_bytes());
                    }
                    self.read += batch.len();
                    true
                }
                // Nothing more: wait like a quiet log does.
                None => std::future::pending().await,
            }
        }
        fn position(&self) -> Option<Vec<u8>> {
            Some(self.read.to_string().into_bytes())
        }
    }

    /// A sink that keeps the lines and the barriers (answered by the test).
    #[derive(Clone, Default)]
    struct Keep(Arc<Mutex<(Vec<String>, Vec<Barrier>)>>);

    impl Sink for Keep {
        async fn take(&mut self, batch: &Batch) -> bool {
            let mut k = self.0.lock().expect("lock");
            k.0.extend(
                batch
                    .records()
                    .map(|r| String::from_utf8_lossy(r.text).into_owned()),
            );
            true
        }
        async fn barrier(&mut self, barrier: Barrier) -> bool {
            self.0.lock().expect("lock").1.push(barrier);
            true
        }
    }

    #[tokio::test]
    async fn a_position_is_saved_only_once_its_barrier_is_answered_and_the_loop_stops_between_reads(
    ) {
        let positions = Arc::new(Saved::default());
        positions.save(b"s", b"1").expect("seed");
        let source = Script {
            batches: VecDeque::from([vec!["a", "b"], vec!["a very long line"]]),
            read: 1,
            opened_at: None,
        };
        let sink = Keep::default();
        let stop = CancellationToken::new();
        let cx = Follow {
            positions: positions.clone(),
            stop: stop.clone(),
            cap: 6,
        };
        let (opened, is_open) = oneshot::channel();
        let task = tokio::spawn(follow(source, sink.clone(), cx, Some(opened)));
        is_open.await.expect("opened");
        while sink.0.lock().expect("lock").1.len() < 2 {
            tokio::task::yield_now().await;
        }
        let barriers: Vec<Barrier> = {
            let mut k = sink.0.lock().expect("lock");
            assert_eq!(k.0, ["a", "b", "a very"], "lines in order, cut at the cap");
            k.1.drain(..).collect()
        };
        tokio::task::yield_now().await;
        assert_eq!(
            positions.load(b"s").expect("load").as_deref(),
            Some(&b"1"[..]),
            "not before the barrier"
        );
        let mut barriers = barriers.into_iter();
        barriers.next().expect("first").send(()).expect("answer");
        // The second is dropped unanswered: its position is never saved.
        drop(barriers);
        stop.cancel();
        task.await.expect("stopped");
        assert_eq!(
            positions.load(b"s").expect("load").as_deref(),
            Some(&b"3"[..])
        );
    }
}
