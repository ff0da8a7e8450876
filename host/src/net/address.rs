//! Which IP addresses are globally reachable: everything else (loopback, private, link-local,
//! shared, documentation, multicast, reserved, and IPv4 hidden in IPv6) is refused to a guest's
//! outbound request unless the allow-list names it literally.
use super::cidr::Cidr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True when `ip` is a globally reachable unicast address. Strict: a range the IANA
/// special-purpose registries mark as not global, or that is not allocated for global unicast,
/// is not global; an IPv6 address carrying an IPv4 address is judged by the IPv4 address.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

/// IPv4 ranges that are not globally reachable (RFC 6890 and successors).
const NON_GLOBAL_V4: &[Cidr] = &[
    Cidr::v4([0, 0, 0, 0], 8),       // "this network", incl. the unspecified 0.0.0.0
    Cidr::v4([10, 0, 0, 0], 8),      // private
    Cidr::v4([100, 64, 0, 0], 10),   // shared address space (carrier-grade NAT)
    Cidr::v4([127, 0, 0, 0], 8),     // loopback
    Cidr::v4([169, 254, 0, 0], 16),  // link-local, incl. cloud metadata 169.254.169.254
    Cidr::v4([172, 16, 0, 0], 12),   // private
    Cidr::v4([192, 0, 0, 0], 24),    // IETF protocol assignments
    Cidr::v4([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    Cidr::v4([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    Cidr::v4([192, 168, 0, 0], 16),  // private
    Cidr::v4([198, 18, 0, 0], 15),   // benchmarking
    Cidr::v4([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    Cidr::v4([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    Cidr::v4([224, 0, 0, 0], 4),     // multicast
    Cidr::v4([240, 0, 0, 0], 4),     // reserved, incl. broadcast 255.255.255.255
];

fn is_global_v4(ip: Ipv4Addr) -> bool {
    !NON_GLOBAL_V4.iter().any(|net| net.contains(IpAddr::V4(ip)))
}

/// IPv4-mapped `::ffff:0:0/96`: the IPv4 address in the low 32 bits.
pub const IPV4_MAPPED: Cidr = Cidr::v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96);
/// The well-known NAT64 prefix `64:ff9b::/96`: reaches the IPv4 address in the low 32 bits.
pub const NAT64: Cidr = Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const GLOBAL_UNICAST: Cidr = Cidr::v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
const TEREDO: Cidr = Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32);
const SIX_TO_FOUR: Cidr = Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);
const NON_GLOBAL_V6: &[Cidr] = &[
    Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments (benchmarking, ORCHID, ...)
    Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation
    Cidr::v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), // segment routing SIDs
];

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let v6 = IpAddr::V6(ip);
    if IPV4_MAPPED.contains(v6) || NAT64.contains(v6) {
        return is_global_v4(Ipv4Addr::from(bits as u32));
    }
    // Everything else outside 2000::/3 (global unicast) is not global: ::, ::1, the deprecated
    // IPv4-compatible ::/96, local-use NAT64 64:ff9b:1::/48, discard 100::/64, ULA fc00::/7,
    // link-local fe80::/10, site-local fec0::/10, multicast ff00::/8.
    if !GLOBAL_UNICAST.contains(v6) {
        return false;
    }
    // Teredo 2001::/32: the server's IPv4 in bits 32..64, the client's (inverted) in the last 32.
    if TEREDO.contains(v6) {
        let server = Ipv4Addr::from((bits >> 64) as u32);
        let client = Ipv4Addr::from(!(bits as u32));
        return is_global_v4(server) && is_global_v4(client);
    }
    // 6to4 2002::/16: the IPv4 address in bits 16..48.
    if SIX_TO_FOUR.contains(v6) {
        return is_global_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    !NON_GLOBAL_V6.iter().any(|net| net.contains(v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(text: &str) -> bool {
        is_global(text.parse().unwrap())
    }

    #[test]
    fn public_addresses_are_global() {
        for ip in
            ["1.1.1.1", "8.8.8.8", "93.184.216.34", "100.63.255.255", "100.128.0.0", "172.32.0.1", "2606:4700::1111"]
        {
            assert!(global(ip), "{ip} is global");
        }
    }

    #[test]
    fn local_and_special_ipv4_is_not_global() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!global(ip), "{ip} is not global");
        }
    }

    #[test]
    fn local_and_special_ipv6_is_not_global() {
        for ip in [
            "::",
            "::1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2001:10::1",
            "5f00::1",
            "64:ff9b:1::a9fe:a9fe",
        ] {
            assert!(!global(ip), "{ip} is not global");
        }
    }

    #[test]
    fn ipv4_hidden_in_ipv6_is_judged_by_the_ipv4_address() {
        // IPv4-mapped.
        assert!(!global("::ffff:127.0.0.1"));
        assert!(!global("::ffff:169.254.169.254"));
        assert!(!global("::ffff:10.1.2.3"));
        assert!(global("::ffff:8.8.8.8"));
        // NAT64 well-known prefix.
        assert!(!global("64:ff9b::7f00:1"));
        assert!(!global("64:ff9b::a9fe:a9fe"));
        assert!(global("64:ff9b::808:808"));
        // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        assert!(!global("2002:7f00:1::1"));
        assert!(!global("2002:a9fe:a9fe::1"));
        assert!(!global("2002:c0a8:0101::1"));
        assert!(global("2002:0808:0808::1"));
        // Teredo: server 8.8.8.8, client = !last 32 bits.
        let client_loopback = !u32::from(Ipv4Addr::new(127, 0, 0, 1));
        let teredo = |server: u32, client: u32| {
            let bits = (0x2001_0000u128 << 96) | ((server as u128) << 64) | client as u128;
            is_global(IpAddr::V6(Ipv6Addr::from(bits)))
        };
        let public = u32::from(Ipv4Addr::new(8, 8, 8, 8));
        assert!(!teredo(public, client_loopback));
        assert!(!teredo(u32::from(Ipv4Addr::new(10, 0, 0, 1)), !public));
        assert!(teredo(public, !u32::from(Ipv4Addr::new(1, 1, 1, 1))));
    }
}
