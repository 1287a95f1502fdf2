//! The session's spare activation buffers, reused from one layer and one call to the next.
//!
//! A 128-token prefill of the 700M shape frees and allocates several megabytes of activations
//! per layer (gate, up and their product at `n × n_ff` are 2 MiB each). glibc returns a freed top
//! of heap past its trim threshold to the kernel and the next layer faults the pages in again,
//! zeroed, under the process's memory lock: `perf` put a twentieth of a one-thread prefill and
//! more with two threads in `clear_page` and the fault path. Buffers handed back here are kept
//! (up to [`KEEP`] of them) and given out again, zeroed, to the next request they fit.

use std::sync::Mutex;

/// At most this many spare buffers are kept (a layer uses about a dozen at once).
pub(super) const KEEP: usize = 24;

/// Spare `f32` buffers.
#[derive(Default)]
pub(super) struct Scratch {
    spare: Mutex<Vec<Vec<f32>>>,
}

impl Scratch {
    /// `n` zeros: the smallest spare buffer that holds `n`, else a new one.
    pub(super) fn zeroed(&self, n: usize) -> Vec<f32> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let best = spare
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= n)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut b = spare.swap_remove(i);
                b.clear();
                b.resize(n, 0.0);
                b
            }
            None => vec![0f32; n],
        }
    }

    /// Keep `bufs` for later requests; past [`KEEP`] spares the smallest are dropped.
    pub(super) fn give_back<const N: usize>(&self, bufs: [Vec<f32>; N]) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        spare.extend(bufs.into_iter().filter(|b| b.capacity() > 0));
        if spare.len() > KEEP {
            spare.sort_unstable_by_key(|b| std::cmp::Reverse(b.capacity()));
            spare.truncate(KEEP);
        }
    }

    /// How many spare buffers are held (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.spare.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_smallest_buffer_that_fits_and_hands_out_zeros() {
        let s = Scratch::default();
        let mut a = s.zeroed(100);
        a.iter_mut().for_each(|v| *v = 7.0);
        let b = vec![3.0f32; 1000];
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        s.give_back([a, b]);
        assert_eq!(s.len(), 2);
        // 50 fits both; the 100-element buffer is the smaller one.
        let c = s.zeroed(50);
        assert_eq!(c.as_ptr(), pa);
        assert_eq!(c, vec![0.0; 50]);
        // 500 fits only the large one; it comes back zeroed at the asked length.
        let d = s.zeroed(500);
        assert_eq!(d.as_ptr(), pb);
        assert_eq!(d, vec![0.0; 500]);
        // Nothing spare: a new buffer.
        let e = s.zeroed(10);
        assert_eq!(e, vec![0.0; 10]);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn keeps_at_most_keep_buffers_the_largest_ones() {
        let s = Scratch::default();
        for n in 1..=KEEP + 5 {
            s.give_back([vec![0f32; n]]);
        }
        assert_eq!(s.len(), KEEP);
        // The five smallest (1..=5 elements) were dropped: a request for 3 gets a 6-element one.
        assert!(s.zeroed(3).capacity() >= 6);
        // Empty vectors are not kept.
        s.give_back([Vec::new()]);
        assert_eq!(s.len(), KEEP - 1);
    }
}
