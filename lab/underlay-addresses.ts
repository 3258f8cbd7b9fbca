/**
 * The underlay's fixed addresses, shared by the lab and the test topology: the hub (the underlay's bridge and
 * router, where etcd and the control plane listen) is .254 of 192.0.2.0/24 and ::fe of 2001:db8:2::/64.
 */
export const HUB_IP = '192.0.2.254';
export const HUB_IP6 = '2001:db8:2::fe';

/**
 * A BGP router on the underlay (the lab's `up --bgp`, the tests' bgp-router) and the "office" segment behind it: a
 * network on no node, whose only way to the pods is what the router learnt from the nodes.
 */
export const ROUTER_IP = '192.0.2.250';
export const ROUTER_IP6 = '2001:db8:2::fa';
export const OFFICE_NET = '203.0.113.0/24';
export const OFFICE_NET6 = '2001:db8:3::/64';
export const OFFICE_GATEWAY = '203.0.113.1';
export const OFFICE_GATEWAY6 = '2001:db8:3::1';
export const OFFICE_IP = '203.0.113.10';
export const OFFICE_IP6 = '2001:db8:3::10';
