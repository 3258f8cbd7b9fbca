// Builds upstream's flannel CNI plugin (see tools/build.sh). Its current home, github.com/flannel-io/cni-plugin, is
// refused by the module proxy at every version (403), so this is the same plugin at its last release inside
// github.com/containernetworking/plugins (v0.9.1, plugins/meta/flannel), before it moved there.
module flannel-ts.local/tools/cni-flannel

go 1.25.9

require github.com/containernetworking/plugins v0.9.1
