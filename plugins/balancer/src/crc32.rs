//! CRC-32 (IEEE, the polynomial of zlib and nginx's `ngx_crc32`),
//! table-driven and fed in pieces like `ngx_crc32_update`.

const TABLE: [u32; 256] = table();

const fn table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// A CRC-32 in progress. `Copy`, so that a common prefix can be hashed once
/// and extended several ways (the ketama points do this).
#[derive(Clone, Copy)]
pub(crate) struct Crc32(u32);

impl Crc32 {
    /// An empty CRC (`ngx_crc32_init`).
    pub(crate) const fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }

    /// Feeds `bytes` (`ngx_crc32_update`).
    pub(crate) fn update(self, bytes: &[u8]) -> Self {
        Crc32(bytes.iter().fold(self.0, |crc, &b| {
            TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8)
        }))
    }

    /// The checksum of everything fed so far (`ngx_crc32_final`).
    pub(crate) fn finish(self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

/// The CRC-32 of `bytes` (`ngx_crc32_long`).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    Crc32::new().update(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn pieces_equal_whole() {
        let split = Crc32::new().update(b"1234").update(b"56789").finish();
        assert_eq!(split, crc32(b"123456789"));
    }
}
