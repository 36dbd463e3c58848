//! The phone-camera link as a QR code the host scans from the dashboard.

use image::{ImageFormat, Luma};
use qrcode::QrCode;

/// Longest origin taken: a scheme, a host name or address, and a port.
const MAX_ORIGIN: usize = 200;

/// `text` drawn as a QR code, a PNG big enough to scan from a screen.
pub fn png(text: &str) -> Result<Vec<u8>, String> {
    let code = QrCode::new(text.as_bytes()).map_err(|e| format!("cannot draw the link: {e}"))?;
    let img = code
        .render::<Luma<u8>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build();
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, ImageFormat::Png)
        .map_err(|e| format!("cannot encode the QR code: {e}"))?;
    Ok(png.into_inner())
}

/// Checks a page's origin (`http://host:port`, `https://host`): a scheme, then a host and an
/// optional port, nothing after. Returns it without a trailing slash.
pub fn origin(text: &str) -> Result<&str, &'static str> {
    let origin = text.trim().trim_end_matches('/');
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("origin must start with http:// or https://")?;
    let host_ok = !rest.is_empty()
        && origin.len() <= MAX_ORIGIN
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if host_ok {
        Ok(origin)
    } else {
        Err("origin must be a scheme, a host and a port only (http://192.168.1.20:8080)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_a_scheme_a_host_and_a_port_only() {
        assert_eq!(
            origin("http://192.168.1.20:8080/"),
            Ok("http://192.168.1.20:8080")
        );
        assert_eq!(origin("https://party.example"), Ok("https://party.example"));
        assert_eq!(origin("http://[::1]:8080"), Ok("http://[::1]:8080"));
        for bad in [
            "ftp://x",
            "http://",
            "http://a/b",
            "http://a?x=1",
            "http://a#k",
            "http://a b",
            "javascript:alert(1)",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_png_is_a_scannable_size() {
        let png =
            png("http://192.168.1.20:8080/phone#key=abcdefghijklmnopqrstuvwxyz012345").unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert!(img.width() >= 256 && img.height() >= 256);
    }
}
