//! Small text helpers for the per-command paths (numbers written without `fmt`).

/// The decimal digits of `n`, written at the end of `buf`.
pub(crate) fn decimal(n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `n` in decimal (ports, cookie parts and the like).
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(decimal(n, &mut [0; 10]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_matches_to_string() {
        for n in [0, 7, 10, 255, 65535, 1_000_000, u32::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
