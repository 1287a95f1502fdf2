//! The generator's random numbers: SplitMix64, written out here so that a spec's bytes never
//! depend on a crate's version (a changed stream would silently change every golden).

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state, one add and a mix per number.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A stream for one tensor: the model seed mixed with the tensor's name (FNV-1a), so tensors
    /// can be generated independently, in any order.
    pub fn for_tensor(seed: u64, name: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut r = Rng(seed ^ h);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// −1, 0 or +1 with equal probability (multiply-shift on 32 bits).
    pub fn trit(&mut self) -> i8 {
        (((self.next_u64() >> 32) * 3) >> 32) as i8 - 1
    }

    /// Standard normal by Box–Muller (f64 inside, one value per call).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // First outputs of SplitMix64 seeded with 1234567, from the published reference
        // implementation (Vigna, prng.di.unimi.it/splitmix64.c).
        let mut r = Rng::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn trits_and_normals_have_the_right_moments() {
        let mut r = Rng::new(9);
        let n = 30_000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[(r.trit() + 1) as usize] += 1;
        }
        assert!(
            counts
                .iter()
                .all(|&c| (c as f64 - n as f64 / 3.0).abs() < 400.0),
            "{counts:?}"
        );
        let v: Vec<f32> = (0..n).map(|_| r.normal()).collect();
        let mean = v.iter().sum::<f32>() / n as f32;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
