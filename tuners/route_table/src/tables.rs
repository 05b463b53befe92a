//! The route_table tuner's tunable and scenario tables and its reason line
//! (interface facts kept exactly as the original's).
//!
//! Ids are the enum discriminants; the BPF side (`route_table.bpf.c`) sends
//! tunable 0 with scenario 0, checked by a unit test below.

bpftune_sdk::tunables! {
    pub enum Tunable {
        Ipv6MaxSize = ("net.ipv6.route.max_size", Sysctl, NAMESPACED | OPTIONAL, 1),
    }
}

bpftune_sdk::scenarios! {
    pub enum Scenario {
        NearlyFull = (
            "destination table nearly full",
            "destination table is nearly full, preventing new entries from being added."
        ),
    }
}

/// Reason logged for every change (the original's format: no parentheses).
pub fn reason(old: i64, new: i64) -> String {
    format!("Due to dst table filling up, change {} from {old} -> {new}", Tunable::Ipv6MaxSize.name())
}

// The ids the BPF side sends are its C enums' (anchored in the object's
// BTF): the build fails if the two ever differ.
bpftune_sdk::same_ids!(crate::skel::types::route_table_tunable => Tunable { ROUTE_TABLE_IPV6_MAX_SIZE = Ipv6MaxSize });
bpftune_sdk::same_ids!(crate::skel::types::route_table_scenario => Scenario { ROUTE_TABLE_NEARLY_FULL = NearlyFull });

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::abi::{TunableFlags, TunableKind};

    #[test]
    fn ids_match_the_bpf_side_and_the_reference() {
        // The C ids are checked at compile time (same_ids! above).
        assert_eq!(Tunable::ALL.len(), 1);
        assert_eq!(Scenario::ALL.len(), 1);
        let d = Tunable::TABLE[0];
        assert_eq!(d.name.as_str(), "net.ipv6.route.max_size");
        assert_eq!(d.kind, TunableKind::Sysctl);
        assert_eq!(d.num_values, 1);
        assert!(d.flags.contains(TunableFlags::NAMESPACED));
        assert!(d.flags.contains(TunableFlags::OPTIONAL));
    }

    #[test]
    fn reason_and_scenario_format() {
        assert_eq!(reason(4096, 5120), "Due to dst table filling up, change net.ipv6.route.max_size from 4096 -> 5120");
        assert_eq!(Scenario::NearlyFull.name(), "destination table nearly full");
        assert_eq!(
            Scenario::TABLE[0].description.as_str(),
            "destination table is nearly full, preventing new entries from being added."
        );
    }
}
