use super::*;
use proptest::prelude::*;

fn ternary(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 3) as f32 - 1.0
        })
        .map(|t| t * scale)
        .collect()
}

#[test]
fn ternary_formats_round_trip_exactly() {
    // Ternary values times a scale that f16 represents exactly survive every ternary format.
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::I2_S] {
        let x = ternary(512, 7, 0.125);
        let q = quantize(ty, &x).unwrap();
        assert_eq!(q.len() as u64, ty.data_bytes(512, 512).unwrap(), "{ty}");
        assert_eq!(dequantize(ty, &q, 512).unwrap(), x, "{ty}");
    }
}

#[test]
fn hand_worked_tq2_0_block() {
    // Element 0 = +1 and element 32 = −1: byte 0 holds code 2 in bits 0-1 and code 0 in bits 2-3,
    // codes 1 (zero) elsewhere: 0b01_01_00_10 = 0x52. Other bytes: all zero codes = 0x55.
    let mut x = vec![0f32; 256];
    x[0] = 2.0;
    x[32] = -2.0;
    let q = quantize(GgmlType::TQ2_0, &x).unwrap();
    assert_eq!(q[0], 0x52);
    assert!(q[1..64].iter().all(|&b| b == 0x55));
    assert_eq!(f16_to_f32(u16::from_le_bytes([q[64], q[65]])), 2.0);
}

#[test]
fn hand_worked_tq1_0_block() {
    // First byte packs elements 0, 32, 64, 96, 128 = (+1, 0, 0, 0, −1) → trits (2,1,1,1,0):
    // 2·81 + 27 + 9 + 3 + 0 = 201; ceil(201·256/243) = 212 (201·256 = 51456, /243 = 211.75).
    let mut x = vec![0f32; 256];
    x[0] = 1.0;
    x[128] = -1.0;
    let q = quantize(GgmlType::TQ1_0, &x).unwrap();
    assert_eq!(q[0], 212);
    let y = dequantize(GgmlType::TQ1_0, &q, 256).unwrap();
    assert_eq!((y[0], y[128], y[1]), (1.0, -1.0, 0.0));
}

#[test]
fn hand_worked_i2_s_layout() {
    // Element 33 of the first group: byte 1, bits 4-5 (6 − 2·1). +1 → code 2 → 0b10 << 4.
    let mut x = vec![0f32; 128];
    x[33] = 0.5;
    x[0] = -0.5;
    let q = quantize(GgmlType::I2_S, &x).unwrap();
    assert_eq!(q.len(), 32 + 32);
    assert_eq!(q[1], (2 << 4) | (1 << 6) | (1 << 2) | 1);
    assert_eq!(q[0], 0x15); // element 0 → code 0 in bits 6-7, zeros (code 1) below
    assert_eq!(f32::from_le_bytes([q[32], q[33], q[34], q[35]]), 0.5);
}

#[test]
fn q8_0_and_floats() {
    // One block: amax 127 → d = 1; values round half away from zero.
    let mut x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
    x[0] = 127.0;
    x[1] = 2.5;
    let q = quantize(GgmlType::Q8_0, &x).unwrap();
    assert_eq!(u16::from_le_bytes([q[0], q[1]]), 0x3c00); // 1.0 in f16
    assert_eq!(q[3] as i8, 3);
    let y = dequantize(GgmlType::Q8_0, &q, 32).unwrap();
    assert_eq!(y[2], -14.0);
    assert_eq!(f32_to_bf16(1.0 + f32::EPSILON), 0x3f80);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie to even
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
    assert_eq!(f32_to_f16(65520.0), 0x7c00); // rounds to infinity
}

#[test]
fn errors_name_type_and_sizes() {
    assert_eq!(
        dequantize(GgmlType::Q4_K, &[], 256).unwrap_err().to_string(),
        "tensor type `Q4_K` is not supported by this engine (supported: F32, F16, BF16, Q8_0, Q6_K, TQ1_0, TQ2_0, I2_S)"
    );
    assert!(matches!(
        dequantize(GgmlType::TQ2_0, &[0; 65], 256),
        Err(QuantError::Length {
            expected: 66,
            got: 65,
            ..
        })
    ));
    assert!(matches!(
        quantize(GgmlType::TQ1_0, &[0.0; 100]),
        Err(QuantError::BlockSize { .. })
    ));
}

#[test]
fn halves_of_a_slice_round_to_nearest_even_by_hand() {
    // IEEE 754 binary16 by hand; eleven values, so one group of eight and a tail of three.
    let cases: [(f32, u16); 11] = [
        (1.0, 0x3c00),
        (-2.5, 0xc100),
        (65504.0, 0x7bff),              // the largest half
        (65520.0, 0x7c00),              // halfway past it: rounds to infinity
        (2f32.powi(-24), 0x0001),       // the smallest subnormal
        (2f32.powi(-25), 0x0000),       // half of it: a tie, to even (zero)
        (3.0 * 2f32.powi(-25), 0x0002), // 1.5 of it: a tie, to even (two)
        (-0.0, 0x8000),
        (f32::INFINITY, 0x7c00),
        (1.0 + 2f32.powi(-11), 0x3c00), // a tie between 1 and its next half: to even
        (1.0 + 3.0 * 2f32.powi(-11), 0x3c02), // a tie between 0x3c01 and 0x3c02: to even
    ];
    let src: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let mut got = vec![0u16; src.len()];
    f32_to_f16_into(&src, &mut got);
    let want: Vec<u16> = cases.iter().map(|c| c.1).collect();
    assert_eq!(got, want);
    // A quiet NaN stays a NaN.
    let mut nan = [0u16; 1];
    f32_to_f16_into(&[f32::NAN], &mut nan);
    assert!(nan[0] & 0x7c00 == 0x7c00 && nan[0] & 0x03ff != 0);
}

proptest! {
    #[test]
    fn half_rounding_of_a_slice_equals_the_scalar_one(
        bits in prop::collection::vec(any::<u32>(), 0..40),
    ) {
        // Any bit pattern: NaNs with payloads, infinities, subnormals, ties.
        let src: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let mut got = vec![0u16; src.len()];
        f32_to_f16_into(&src, &mut got);
        let want: Vec<u16> = src.iter().map(|&v| f32_to_f16(v)).collect();
        prop_assert_eq!(got, want);
    }
}
