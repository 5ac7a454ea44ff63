//! MLflow's own password hashes, as its basic-auth app stores them (werkzeug's
//! `generate_password_hash`: `pbkdf2:sha256:600000$salt$hex` or `scrypt:32768:8:1$salt$hex`).
//! An imported user (docs/migrating.md) signs in with their MLflow password once; the
//! verified password is then re-hashed with Argon2id (see [`super::Auth::authenticate`]).

/// Whether `hash` is in werkzeug's format (method, salt and hex digest separated by `$`).
pub fn is_werkzeug(hash: &str) -> bool {
    hash.starts_with("pbkdf2:") || hash.starts_with("scrypt")
}

/// Verify `password` against a werkzeug hash; `None` for a hash this module cannot read (an
/// unknown method or malformed parameters, which then verify nothing).
pub fn verify(hash: &str, password: &str) -> Option<bool> {
    let mut parts = hash.splitn(3, '$');
    let (method, salt, expected) = (parts.next()?, parts.next()?, parts.next()?);
    let expected = decode_hex(expected)?;
    let mut params = method.split(':');
    let derived = match params.next()? {
        "pbkdf2" => {
            let digest = params.next().unwrap_or("sha256");
            // werkzeug writes the iteration count; a hash without one is not ours to guess.
            let rounds: u32 = params.next()?.parse().ok().filter(|n| *n > 0)?;
            let mut out = vec![0u8; expected.len()];
            match digest {
                "sha256" => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                    password.as_bytes(),
                    salt.as_bytes(),
                    rounds,
                    &mut out,
                ),
                "sha512" => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(
                    password.as_bytes(),
                    salt.as_bytes(),
                    rounds,
                    &mut out,
                ),
                _ => return None,
            }
            out
        }
        "scrypt" => {
            // werkzeug's defaults when the method is bare `scrypt`: n = 2^15, r = 8, p = 1.
            let n: u64 = params.next().map_or(Some(32768), |v| v.parse().ok())?;
            let r: u32 = params.next().map_or(Some(8), |v| v.parse().ok())?;
            let p: u32 = params.next().map_or(Some(1), |v| v.parse().ok())?;
            if !n.is_power_of_two()
                || !(2..=1 << 20).contains(&n)
                || !(1..=32).contains(&r)
                || !(1..=16).contains(&p)
            {
                return None;
            }
            let log_n = u8::try_from(n.trailing_zeros()).ok()?;
            let params = scrypt::Params::new(log_n, r, p, expected.len()).ok()?;
            let mut out = vec![0u8; expected.len()];
            scrypt::scrypt(password.as_bytes(), salt.as_bytes(), &params, &mut out).ok()?;
            out
        }
        _ => return None,
    };
    Some(constant_time_eq(&derived, &expected))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 256 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by werkzeug's generate_password_hash("imported-password-1", method=…), the function
    // MLflow's basic-auth app calls.
    const PBKDF2_SHA256: &str = "pbkdf2:sha256:1000$cvhQC2QqcJoikEz0$9ee04d583c3fd0435d47b555cabe751488382a7e01175446facbc0a6996f6eb7";
    const PBKDF2_SHA512: &str = "pbkdf2:sha512:1000$p6KkDYgdYSTk9ANU$cc17334581e49dce77c23fd1ef77802f59c7ef25f2d251f1996991a48b5a8a6add9927ecd8ef4a752a26e589d234dea20e07ffebb228330419d275e2d206680c";
    const SCRYPT_SMALL: &str = "scrypt:1024:8:1$XaikcQHP5b4oaVha$7771318b8d7e607bde07d53c58d8bfc9ac6d1d7256f1f33cd00459da6bbe8f4b099f7ebea1959f89fbb62d37241c7ebe0947b00ee21d2b15cdbbf698a6cdee87";
    /// werkzeug 3's default, what MLflow 2.17 and 3.17 store.
    const SCRYPT_DEFAULT: &str = "scrypt:32768:8:1$vfKXRKsSgEDMwVgI$837bdfb01e57100cf32281ecfd142fbd0fd6ebbe371b9ed31e7f192d7880eb405401eb3ee5964f7c0957f21fd21ebb631a1dcd07538b72d41c0260e8752a5411";

    #[test]
    fn werkzeug_hashes_verify() {
        for hash in [PBKDF2_SHA256, PBKDF2_SHA512, SCRYPT_SMALL, SCRYPT_DEFAULT] {
            assert!(is_werkzeug(hash));
            assert_eq!(verify(hash, "imported-password-1"), Some(true), "{hash}");
            assert_eq!(verify(hash, "imported-password-2"), Some(false), "{hash}");
        }
    }

    #[test]
    fn malformed_hashes_verify_nothing() {
        assert!(!is_werkzeug("$argon2id$v=19$m=19456,t=2,p=1$abc$def"));
        for bad in [
            "pbkdf2:sha256$salt$00",
            "pbkdf2:md5:1000$salt$00",
            "pbkdf2:sha256:0$salt$00",
            "scrypt:1000:8:1$salt$00",
            "scrypt:32768:8:1$salt$zz",
            "scrypt:32768:8:1$salt",
            "scrypt:32768:8:1$salt$",
            "bcrypt$salt$00",
        ] {
            assert_eq!(verify(bad, "x"), None, "{bad}");
        }
    }
}
