#!/usr/bin/env node
/**
 * `npm run image`: builds the flannel-ts image (and the lab's sandbox and pod images) as OCI archives without a
 * container engine, and prints where they are and how to load them into containerd.
 */
import { REPO_ROOT } from '../lab/lab-state.js';
import { buildLabImages } from './images.js';

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

const images = await buildLabImages({ repo: REPO_ROOT, log: (line) => process.stderr.write(`image: ${line}\n`) });
for (const image of Object.values(images)) {
  process.stdout.write(`${image.reference}  ${mb(image.bytes)}  ${image.archive}\n`);
}
process.stdout.write(`\nload one into containerd (the namespace the kubelet uses):\n  ctr -n k8s.io images import --base-name ${images.flannel.repository} ${images.flannel.archive}\n`);
