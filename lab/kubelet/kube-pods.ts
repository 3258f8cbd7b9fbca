/**
 * The lab's pods in kubelet mode: real Pods of the lab's busybox image, pinned to a host by its hostname label (the
 * scheduler places them), each serving a TCP echo on port 8080; containerd gives them their network through the
 * flannel CNI plugin. Pings and connections run in them with `kubectl exec`.
 */
import type { V1Pod } from '@kubernetes/client-node';
import type { Kubectl } from '../kube/kubectl.js';
import type { PodRecord } from '../lab-state.js';

export const LAB_POD_LABEL = 'flannel-ts.lab/pod';
export const ECHO_PORT = 8080;

export function labPod(name: string, host: string, image: string): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { [LAB_POD_LABEL]: 'true' } },
    spec: {
      nodeSelector: { 'kubernetes.io/hostname': host },
      // The kubelet gives at least 2 s of grace whatever this says; the shell's trap ends the pod at SIGTERM at once.
      terminationGracePeriodSeconds: 0,
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      containers: [{
        name: 'echo',
        image,
        imagePullPolicy: 'Never',
        // A shell as PID 1 with a TERM trap: nc alone as PID 1 would ignore SIGTERM and every delete would wait.
        command: ['/bin/sh', '-c', `trap 'exit 0' TERM; nc -ll -p ${ECHO_PORT} -e /bin/cat & wait`],
      }],
    },
  };
}

/** A Running pod's record: its node and the address(es) CNI gave it (IPv4 first, as the lab lists them). */
export function podRecordOf(pod: V1Pod): PodRecord | undefined {
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip).filter((ip): ip is string => Boolean(ip));
  const name = pod.metadata?.name;
  const host = pod.spec?.nodeName;
  const v4 = ips.find((ip) => !ip.includes(':'));
  const v6 = ips.find((ip) => ip.includes(':'));
  const first = v4 ?? v6;
  if (!name || !host || !first || pod.status?.phase !== 'Running') return undefined;
  return { name, host, netns: '', ip: first, ...(v6 ? { ip6: v6 } : {}), kubePod: `default/${name}` };
}

/** Creates the pods and waits until each is Ready; returns their records. */
export async function createLabPods(kubectl: Kubectl, pods: readonly { name: string; host: string }[], image: string, timeoutSeconds = 180): Promise<PodRecord[]> {
  if (pods.length === 0) return [];
  const list = { apiVersion: 'v1', kind: 'List', items: pods.map((p) => labPod(p.name, p.host, image)) };
  await kubectl.run(['apply', '-f', '-'], JSON.stringify(list));
  await kubectl.run(['wait', '--for=condition=Ready', ...pods.map((p) => `pod/${p.name}`), `--timeout=${timeoutSeconds}s`], undefined,
    (timeoutSeconds + 15) * 1000);
  const got = await kubectl.json<{ items: V1Pod[] }>(['get', 'pods', '-l', LAB_POD_LABEL]);
  const wanted = new Set(pods.map((p) => p.name));
  return got.items.map(podRecordOf).filter((r): r is PodRecord => r !== undefined && wanted.has(r.name));
}

/** `kubectl exec` of a command in a lab pod; its stdout. */
export const execInPod = (kubectl: Kubectl, pod: PodRecord, argv: readonly string[]): Promise<string> =>
  kubectl.run(['exec', pod.kubePod?.split('/')[1] ?? pod.name, '--', ...argv]);
