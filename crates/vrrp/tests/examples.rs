//! The example layouts pass validation and their tracking arithmetic moves
//! the VIP (no `tracking_warnings`).

use std::path::Path;

#[test]
fn the_vrrp_examples_are_valid_and_their_tracking_moves_the_vip() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for name in [
        "vrrp-active-standby.yaml",
        "vrrp-active-active.yaml",
        "vrrp-cluster.yaml",
    ] {
        let config = tandem_config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!config.vrrp.instances.is_empty(), "{name}");
        for i in &config.vrrp.instances {
            let w = tandem_vrrp::tracking_warnings(i);
            assert!(w.is_empty(), "{name}: {w:?}");
        }
    }
}

#[test]
fn the_design_example_warns_only_with_its_numbers() {
    let yaml = "\
services:
  - { name: api, listen: 198.18.0.100:8443, backends: [{ address: 198.18.0.11:6443 }] }
vrrp:
  instances:
    - name: vip
      interface: eth0
      virtual_router_id: 51
      priority: 150
      virtual_ips: [198.18.0.100/24]
      track: { services: [api], weight: -2 }
";
    let c = tandem_config::parse(yaml, "t.yaml").unwrap();
    let w = tandem_vrrp::tracking_warnings(&c.vrrp.instances[0]);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("from 150 by 2 to 148, still above 100"),
        "{w:?}"
    );
}
