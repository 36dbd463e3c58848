//! The kernel's UDP counters of this process's network namespace (`/proc/net/snmp`): how many
//! datagrams it dropped before a socket read them. Inside a namespace of its own the receivers
//! are the only UDP users, so the difference is theirs; on the machine's loopback it is shared.

/// The two drop counters of the `Udp:` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpCounters {
    pub rcvbuf_errors: u64,
    pub in_errors: u64,
}

/// Reads the counters now; `None` when `/proc/net/snmp` cannot be read or parsed.
pub fn udp_drops() -> Option<UdpCounters> {
    parse(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// The `Udp:` header line names the columns, the next `Udp:` line holds the values.
fn parse(snmp: &str) -> Option<UdpCounters> {
    let mut udp = snmp.lines().filter_map(|l| l.strip_prefix("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<u64> = udp
        .next()?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let get = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i).copied())
    };
    Some(UdpCounters {
        rcvbuf_errors: get("RcvbufErrors")?,
        in_errors: get("InErrors")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_udp_lines_not_udplite() {
        let text = "Tcp: RtoAlgorithm InErrs\nTcp: 1 5\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            Udp: 100 2 7897 50 7890 0\n\
            UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            UdpLite: 0 0 0 0 0 0\n";
        assert_eq!(
            parse(text),
            Some(UdpCounters {
                rcvbuf_errors: 7890,
                in_errors: 7897
            })
        );
        assert_eq!(parse("Tcp: A\nTcp: 1\n"), None);
        assert_eq!(parse("Udp: InErrors\nUdp: x\n"), None);
        assert!(udp_drops().is_some(), "this machine's /proc/net/snmp");
    }
}
