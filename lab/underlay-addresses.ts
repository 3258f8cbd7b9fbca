/**
 * The underlay's fixed addresses, shared by the lab and the test topology: the hub (the underlay's bridge and
 * router, where etcd and the control plane listen) is .254 of 192.0.2.0/24 and ::fe of 2001:db8:2::/64.
 */
export const HUB_IP = '192.0.2.254';
export const HUB_IP6 = '2001:db8:2::fe';
