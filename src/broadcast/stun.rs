//! Just enough STUN to route a datagram to its viewer: the USERNAME of a binding request says
//! which session (our ICE ufrag) it is for, before any 5-tuple is known.

/// STUN's magic cookie (RFC 5389), at bytes 4..8 of every STUN message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// USERNAME attribute type.
const USERNAME: u16 = 0x0006;

/// Whether `datagram` looks like a STUN message (RFC 7983 demultiplexing: first byte 0..=3).
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] < 4 && datagram[4..8] == MAGIC_COOKIE
}

/// The local ufrag named by a STUN message's USERNAME (`local:remote`), if any.
pub fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_stun(datagram) {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let end = (20 + length).min(datagram.len());
    let mut at = 20;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        let value = datagram.get(at + 4..at + 4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attributes are padded to 4 bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // An attribute before USERNAME, to exercise skipping and padding.
        attrs.extend_from_slice(&0x8029u16.to_be_bytes());
        attrs.extend_from_slice(&5u16.to_be_bytes());
        attrs.extend_from_slice(&[1, 2, 3, 4, 5, 0, 0, 0]);
        attrs.extend_from_slice(&USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn finds_the_local_ufrag() {
        let msg = binding_request("srvUfrag:cliUfrag");
        assert!(is_stun(&msg));
        assert_eq!(local_ufrag(&msg), Some("srvUfrag"));
    }

    #[test]
    fn rejects_what_is_not_stun() {
        assert_eq!(local_ufrag(&[0x80; 40]), None, "RTP");
        assert_eq!(local_ufrag(&[22; 40]), None, "DTLS");
        assert_eq!(local_ufrag(&[0; 10]), None, "short");
        let mut truncated = binding_request("a:b");
        truncated.truncate(30);
        assert_eq!(local_ufrag(&truncated), None);
    }
}
