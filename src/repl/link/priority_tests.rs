//! The priority lane: a hot key's change jumps the queue of a region link only.

use super::*;
use crate::hot::{scope::ScopeRules, HotKeys};

#[test]
fn a_hot_key_jumps_the_queue_of_a_region_link_only() {
    let hot = Arc::new(HotKeys::new(8, 0, 1));
    for _ in 0..100 {
        hot.record(b"h");
    }
    hot.refresh(Instant::now());
    assert!(hot.is_hot(b"h"));
    let scope: Arc<arc_swap::ArcSwapOption<ScopeState>> = Default::default();
    scope.store(Some(Arc::new(ScopeState {
        hot,
        rules: ScopeRules::default(),
    })));
    let addr = "127.0.0.1:1".parse().unwrap();
    let slots = SlotSet::from_ranges(&[(0, 16383)]);
    let keys: [&[u8]; 3] = [b"c1", b"c2", b"h"];
    for (kind, want) in [
        (LinkKind::Region, vec![&b"h"[..], b"c1", b"c2"]),
        (LinkKind::Replica, vec![&b"c1"[..], b"c2", b"h"]),
    ] {
        let link =
            Link::new(2, kind, String::new(), addr, slots.clone(), 0).with_scope(scope.clone());
        let changes: Vec<Change> = keys.iter().map(|k| Change::new(k, None)).collect();
        let state = scope.load_full().expect("installed");
        let urgent = state.urgent();
        let flagged = changes
            .iter()
            .map(|c| (c.clone(), urgent.contains(c.key())));
        link.record(flagged, 3, u64::MAX, (Instant::now(), covered_now()));
        let o = link.outbox.lock();
        let queued: Vec<&[u8]> = o.changes.keys().collect();
        assert_eq!(queued, want, "{kind:?}");
        assert_eq!(o.urgent, kind == LinkKind::Region);
    }
}
