//! Prometheus's XOR chunk encoding (`tsdb/chunkenc/xor.go`, the Gorilla paper's scheme
//! as Prometheus writes it), the samples of a `STREAMED_XOR_CHUNKS` remote-read answer.
//! No maintained crate writes Prometheus's variant (its 2-byte sample count, varint
//! first timestamp, four delta-of-delta buckets and 5-bit leading-zero count), so it is
//! written here from xor.go and checked against a decoder written separately from the
//! same source (the tests below) and against a Python decoder (tests/test_remote_read.py).

/// Samples per chunk at most, as Prometheus's own remote-read server cuts them.
pub const MAX_SAMPLES_PER_CHUNK: usize = 120;

/// Bits appended most significant first.
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits already used in the last byte (8: the next bit starts a new byte).
    used: u8,
}

impl BitWriter {
    fn bit(&mut self, one: bool) {
        if self.used == 8 {
            self.bytes.push(0);
            self.used = 0;
        }
        if one {
            if let Some(last) = self.bytes.last_mut() {
                *last |= 0x80 >> self.used;
            }
        }
        self.used += 1;
    }

    /// The low `n` bits of `v`, most significant first.
    fn bits(&mut self, v: u64, n: u32) {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }
}

/// `-(2^(n-1) - 1) <= x <= 2^(n-1)`: the values xor.go stores in `n` bits.
fn fits(x: i64, n: u32) -> bool {
    let half = 1i64 << (n - 1);
    -(half - 1) <= x && x <= half
}

/// One XOR chunk of `samples` (sorted by time, at most `u16::MAX` of them): the bytes
/// Prometheus's `chunkenc.XORChunk` holds for the same appends.
pub fn xor_chunk(samples: &[(i64, f64)]) -> Vec<u8> {
    let n = u16::try_from(samples.len()).unwrap_or(u16::MAX);
    let mut w = BitWriter {
        bytes: n.to_be_bytes().to_vec(),
        used: 8,
    };
    let (mut t_prev, mut v_prev, mut t_delta) = (0i64, 0u64, 0u64);
    // 0xff: no leading/trailing window yet, as in xor.go.
    let (mut leading, mut trailing) = (0xffu32, 0u32);
    for (i, &(t, v)) in samples.iter().take(usize::from(n)).enumerate() {
        let v = v.to_bits();
        match i {
            0 => {
                let mut buf = Vec::with_capacity(10);
                put_uvarint(&mut buf, ((t << 1) ^ (t >> 63)) as u64);
                buf.iter().for_each(|b| w.bits(u64::from(*b), 8));
                w.bits(v, 64);
            }
            _ => {
                let delta = t.wrapping_sub(t_prev) as u64;
                if i == 1 {
                    let mut buf = Vec::with_capacity(10);
                    put_uvarint(&mut buf, delta);
                    buf.iter().for_each(|b| w.bits(u64::from(*b), 8));
                } else {
                    let dod = delta.wrapping_sub(t_delta) as i64;
                    match dod {
                        0 => w.bit(false),
                        d if fits(d, 14) => {
                            w.bits(0b10, 2);
                            w.bits(d as u64, 14);
                        }
                        d if fits(d, 17) => {
                            w.bits(0b110, 3);
                            w.bits(d as u64, 17);
                        }
                        d if fits(d, 20) => {
                            w.bits(0b1110, 4);
                            w.bits(d as u64, 20);
                        }
                        d => {
                            w.bits(0b1111, 4);
                            w.bits(d as u64, 64);
                        }
                    }
                }
                t_delta = delta;
                let xor = v ^ v_prev;
                if xor == 0 {
                    w.bit(false);
                } else {
                    w.bit(true);
                    let new_leading = xor.leading_zeros().min(31);
                    let new_trailing = xor.trailing_zeros();
                    if leading != 0xff && new_leading >= leading && new_trailing >= trailing {
                        w.bit(false);
                        w.bits(xor >> trailing, 64 - leading - trailing);
                    } else {
                        (leading, trailing) = (new_leading, new_trailing);
                        w.bit(true);
                        w.bits(u64::from(new_leading), 5);
                        // 64 significant bits are written as 0 (6 bits).
                        let sig = 64 - new_leading - new_trailing;
                        w.bits(u64::from(sig), 6);
                        w.bits(xor >> new_trailing, sig);
                    }
                }
            }
        }
        (t_prev, v_prev) = (t, v);
    }
    w.bytes
}

fn put_uvarint(buf: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        buf.push((x as u8) | 0x80);
        x >>= 7;
    }
    buf.push(x as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A decoder written from xor.go's `xorIterator`, kept apart from the encoder.
    fn decode(chunk: &[u8]) -> Vec<(i64, u64)> {
        struct R<'a> {
            b: &'a [u8],
            pos: usize,
        }
        impl R<'_> {
            fn bit(&mut self) -> u64 {
                let byte = self.b[self.pos / 8];
                let bit = (byte >> (7 - self.pos % 8)) & 1;
                self.pos += 1;
                u64::from(bit)
            }
            fn bits(&mut self, n: u32) -> u64 {
                (0..n).fold(0, |acc, _| (acc << 1) | self.bit())
            }
            fn uvarint(&mut self) -> u64 {
                let mut x = 0u64;
                let mut shift = 0;
                loop {
                    let b = self.bits(8);
                    x |= (b & 0x7f) << shift;
                    if b < 0x80 {
                        return x;
                    }
                    shift += 7;
                }
            }
        }
        let n = u16::from_be_bytes([chunk[0], chunk[1]]);
        let mut r = R {
            b: &chunk[2..],
            pos: 0,
        };
        let mut out = Vec::new();
        let (mut t, mut v, mut td) = (0i64, 0u64, 0i64);
        let (mut lead, mut trail) = (0u32, 0u32);
        for i in 0..n {
            if i == 0 {
                let z = r.uvarint();
                t = ((z >> 1) as i64) ^ -((z & 1) as i64);
                v = r.bits(64);
            } else {
                if i == 1 {
                    td = r.uvarint() as i64;
                } else {
                    let mut prefix = 0;
                    while prefix < 4 && r.bit() == 1 {
                        prefix += 1;
                    }
                    let size = [0, 14, 17, 20, 64][prefix];
                    let mut dod = r.bits(size) as i64;
                    if (1..64).contains(&size) && dod > 1 << (size - 1) {
                        dod -= 1 << size;
                    }
                    td = td.wrapping_add(dod);
                }
                t = t.wrapping_add(td);
                if r.bit() == 1 {
                    if r.bit() == 1 {
                        lead = r.bits(5) as u32;
                        let mut sig = r.bits(6) as u32;
                        if sig == 0 {
                            sig = 64;
                        }
                        trail = 64 - lead - sig;
                    }
                    v ^= r.bits(64 - lead - trail) << trail;
                }
            }
            out.push((t, v));
        }
        out
    }

    #[test]
    fn one_and_two_samples_are_xor_go_bytes() {
        // 1000 zig-zagged is 2000 = varint d0 0f; 1.0 is 3ff0000000000000.
        let one = xor_chunk(&[(1000, 1.0)]);
        assert_eq!(one, [0, 1, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        // Then the delta 1000 as uvarint e8 07 and one 0 bit (same value).
        let two = xor_chunk(&[(1000, 1.0), (2000, 1.0)]);
        assert_eq!(
            two,
            [0, 2, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0xe8, 0x07, 0]
        );
    }

    #[test]
    fn nan_and_infinities_round_trip() {
        let s = [
            (-5, f64::NAN),
            (0, f64::INFINITY),
            (60_000, f64::NEG_INFINITY),
            (120_000, -0.0),
            (120_001, f64::from_bits(0x7ff8_0000_0000_0001)),
            (i64::MAX, f64::MIN_POSITIVE),
        ];
        let want: Vec<(i64, u64)> = s.iter().map(|(t, v)| (*t, v.to_bits())).collect();
        assert_eq!(decode(&xor_chunk(&s)), want);
    }

    proptest! {
        #[test]
        fn samples_round_trip(
            start in any::<i64>(),
            steps in proptest::collection::vec(
                prop_oneof![Just(0i64), 0i64..20_000, 0i64..2_000_000, any::<i64>()], 0..130),
            values in proptest::collection::vec(
                prop_oneof![any::<u64>(), Just(0u64), Just(f64::NAN.to_bits()), 0u64..1024,
                    Just(1.5f64.to_bits())], 130),
        ) {
            let mut t = start;
            let samples: Vec<(i64, f64)> = steps.iter().zip(&values).map(|(d, v)| {
                t = t.wrapping_add(*d);
                (t, f64::from_bits(*v))
            }).collect();
            let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
            prop_assert_eq!(decode(&xor_chunk(&samples)), want);
        }
    }
}
