//! Group commit for the small store operations a scan's concurrent tasks make: while
//! one runs, the others that arrive wait, and then run as one statement.
//!
//! Each new digest's inspection asks which of its referrers are stored and keeps those
//! it read: two statements per digest, thousands in a cold scan, each costing the
//! database (and both processes' kernels) about as much as its rows. With 30 and more
//! inspections in flight, most of them arrive while another is running: coalesced, a
//! cold scan makes a few hundred instead. Nothing is deferred: a caller returns when its
//! own items are done, exactly as if it had run the statement alone, and a caller whose
//! batch failed (or whose leader was cancelled) runs its items alone.

use std::future::Future;

use tokio::sync::oneshot;

use crate::store::StoreError;

/// Callers' items waiting for the running batch to end, and whether one runs.
struct State<I, O> {
    queue: Vec<(I, oneshot::Sender<Option<O>>)>,
    busy: bool,
}

/// Coalesces concurrent calls of one operation ([`Coalescer::run`]).
pub(crate) struct Coalescer<I, O> {
    state: parking_lot::Mutex<State<I, O>>,
}

impl<I, O> std::fmt::Debug for Coalescer<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl<I, O> Default for Coalescer<I, O> {
    fn default() -> Self {
        Coalescer {
            state: parking_lot::Mutex::new(State {
                queue: Vec::new(),
                busy: false,
            }),
        }
    }
}

/// The leader's hold on [`State::busy`]: dropped before its loop ended (the task was
/// cancelled), it hands the waiting callers back their items (they run them alone).
struct Lead<'a, I, O> {
    coalescer: &'a Coalescer<I, O>,
    done: bool,
}

impl<I, O> Drop for Lead<'_, I, O> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.coalescer.state.lock();
            state.busy = false;
            state.queue.clear();
        }
    }
}

impl<I: Clone, O> Coalescer<I, O> {
    /// Runs `op` on `item`, together with the items of the calls that arrive while
    /// another batch runs. `op` gets the items of a batch and returns one output per item,
    /// in order.
    pub(crate) async fn run<F, Fut>(&self, item: I, op: F) -> Result<O, StoreError>
    where
        F: Fn(Vec<I>) -> Fut,
        Fut: Future<Output = Result<Vec<O>, StoreError>>,
    {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut state = self.state.lock();
            state.queue.push((item.clone(), tx));
            !std::mem::replace(&mut state.busy, true)
        };
        if lead {
            let mut hold = Lead {
                coalescer: self,
                done: false,
            };
            loop {
                let batch = {
                    let mut state = self.state.lock();
                    if state.queue.is_empty() {
                        state.busy = false;
                        break;
                    }
                    std::mem::take(&mut state.queue)
                };
                let (items, senders): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                let n = items.len();
                match op(items).await {
                    Ok(outputs) if outputs.len() == n => {
                        for (sender, output) in senders.into_iter().zip(outputs) {
                            let _ = sender.send(Some(output));
                        }
                    }
                    // Each caller runs its items alone (and sees its own error).
                    _ => {
                        for sender in senders {
                            let _ = sender.send(None);
                        }
                    }
                }
            }
            hold.done = true;
        }
        match rx.await {
            Ok(Some(output)) => Ok(output),
            _ => op(vec![item])
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("no output for a lone item".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_each_gets_its_own_output() {
        let coalescer = Arc::new(Coalescer::<u32, u32>::default());
        let batches = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50u32)
            .map(|i| {
                let (coalescer, batches) = (coalescer.clone(), batches.clone());
                tokio::spawn(async move {
                    coalescer
                        .run(i, |items: Vec<u32>| {
                            let batches = batches.clone();
                            async move {
                                batches.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                                Ok(items.iter().map(|i| i * 10).collect())
                            }
                        })
                        .await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.expect("task").expect("output"), i as u32 * 10);
        }
        let n = batches.load(Ordering::SeqCst);
        assert!(n < 50, "{n} batches for 50 concurrent calls");
    }

    #[tokio::test]
    async fn a_failed_batch_is_run_item_by_item() {
        let coalescer = Arc::new(Coalescer::<u32, u32>::default());
        let tasks: Vec<_> = (0..20u32)
            .map(|i| {
                let coalescer = coalescer.clone();
                tokio::spawn(async move {
                    coalescer
                        .run(i, |items: Vec<u32>| async move {
                            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                            // A batch holding 7 fails; 7 alone fails too.
                            if items.contains(&7) {
                                return Err(StoreError::Corrupt("seven".into()));
                            }
                            Ok(items)
                        })
                        .await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.expect("task");
            if i == 7 {
                assert!(r.is_err());
            } else {
                assert_eq!(r.expect("output"), i as u32);
            }
        }
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_the_waiting_calls_back() {
        let coalescer = Arc::new(Coalescer::<u32, u32>::default());
        let slow = |items: Vec<u32>| async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Ok(items)
        };
        let leader = {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.run(1, slow).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let follower = {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.run(2, slow).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        leader.abort();
        assert_eq!(follower.await.expect("task").expect("output"), 2);
        // And the next call leads again.
        assert_eq!(coalescer.run(3, slow).await.expect("output"), 3);
    }
}
