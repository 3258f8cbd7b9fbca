/**
 * RtnlSocket over a fake transport: request/ack matching, and what happens when replies are lost (an overrun) or
 * the socket breaks: the requests pending then fail with the reason, later requests work, nothing throws out of
 * the receive path.
 */
import { describe, expect, it } from 'vitest';
import { NLMSG_DONE, NLMSG_ERROR, NLM_F_MULTI } from '../../../../backends/datapath/netlink/constants.js';
import { decodeMessages, encodeMessage, type RawMessage } from '../../../../backends/datapath/netlink/message.js';
import {
  NetlinkSendError, type NetlinkReceiver, type NetlinkSocketOptions, type NetlinkTransport,
} from '../../../../backends/datapath/netlink/native-socket.js';
import { NetlinkRequestError, RtnlSocket, type MessageBuilder } from '../../../../backends/datapath/netlink/socket.js';

const ENOENT = 2;
const EEXIST = 17;

const probe = (type = 18): MessageBuilder => (seq) => encodeMessage(type, 1, seq, Buffer.alloc(16), []);

function ack(seq: number, errno = 0): Buffer {
  const payload = Buffer.alloc(4 + 16);
  payload.writeInt32LE(-errno, 0);
  return encodeMessage(NLMSG_ERROR, 0, seq, payload, []);
}

function fakeKernel() {
  const opened: { opts: NetlinkSocketOptions; receiver: NetlinkReceiver; sent: RawMessage[]; closed: boolean }[] = [];
  let failSend: string | undefined;
  const open = (opts: NetlinkSocketOptions, receiver: NetlinkReceiver): NetlinkTransport => {
    const s = { opts, receiver, sent: [] as RawMessage[], closed: false };
    opened.push(s);
    return {
      send(buf) {
        if (failSend) throw new NetlinkSendError(failSend);
        s.sent.push(...decodeMessages(buf));
      },
      info: () => ({ rcvbuf: 2 * (opts.rcvbuf ?? 0), sndbuf: 2 * (opts.sndbuf ?? 0), rcvbufForced: true, portId: 1 }),
      close: () => {
        s.closed = true;
      },
    };
  };
  const current = () => opened[opened.length - 1]!;
  return { opened, open, current, failSends: (errno: string | undefined) => (failSend = errno) };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('RtnlSocket', () => {
  it('opens one request socket with room for a batch of failures and capped acks', () => {
    const k = fakeKernel();
    const sock = new RtnlSocket(k.open);
    expect(k.opened).toHaveLength(1);
    expect(k.current().opts).toEqual({ rcvbuf: 4 * 1024 * 1024, sndbuf: 1024 * 1024, capAck: true });
    expect(sock.info()?.rcvbuf).toBe(8 * 1024 * 1024);
  });

  it('matches replies to requests by sequence number', async () => {
    const k = fakeKernel();
    const sock = new RtnlSocket(k.open);
    const a = sock.request(probe(), 'get a');
    const b = sock.dump(probe(), 'dump b');
    const [ma, mb] = k.current().sent;
    k.current().receiver.data(Buffer.concat([
      encodeMessage(16, NLM_F_MULTI, mb!.seq, Buffer.alloc(16), []),
      ack(ma!.seq, ENOENT),
      encodeMessage(NLMSG_DONE, NLM_F_MULTI, mb!.seq, Buffer.alloc(4), []),
    ]));
    await expect(a).rejects.toThrow(new NetlinkRequestError('ENOENT', 'get a'));
    expect((await b).map((m) => m.type)).toEqual([16]);
  });

  it('fails a dump whose DONE carries an errno: the messages before it are not the whole answer', async () => {
    const k = fakeKernel();
    const sock = new RtnlSocket(k.open);
    const d = sock.dump(probe(), 'dump d');
    const [md] = k.current().sent;
    const done = Buffer.alloc(4);
    done.writeInt32LE(-ENOENT);
    k.current().receiver.data(Buffer.concat([
      encodeMessage(16, NLM_F_MULTI, md!.seq, Buffer.alloc(16), []),
      encodeMessage(NLMSG_DONE, NLM_F_MULTI, md!.seq, done, []),
    ]));
    await expect(d).rejects.toThrow(new NetlinkRequestError('ENOENT', 'dump d'));
  });

  it('fails what is pending when replies were lost, counts it, and goes on', async () => {
    const k = fakeKernel();
    const sock = new RtnlSocket(k.open);
    const lost = sock.request(probe(), 'get lost');
    const answered = sock.request(probe(), 'get answered');
    const [, second] = k.current().sent;
    // The data read before the overrun is still good: the second request's ack came through.
    k.current().receiver.data(ack(second!.seq));
    k.current().receiver.overrun(2);
    await expect(answered).resolves.toEqual([]);
    await expect(lost).rejects.toMatchObject({ errno: 'ENOBUFS' });
    expect(sock.overruns).toBe(2);
    const later = sock.request(probe(), 'get later');
    k.current().receiver.data(ack(k.current().sent[2]!.seq));
    await expect(later).resolves.toEqual([]);
    expect(k.opened).toHaveLength(1);
  });

  it('fails a whole batch whose acks were lost, and reports per-message failures otherwise', async () => {
    const k = fakeKernel();
    const sock = new RtnlSocket(k.open);
    const ok = sock.batch([probe(), probe(), probe()]);
    const sent = k.current().sent;
    expect(sent).toHaveLength(4); // three messages and the fence
    k.current().receiver.data(Buffer.concat([ack(sent[1]!.seq, EEXIST), ack(sent[3]!.seq)]));
    expect(await ok).toEqual(new Map([[1, 'EEXIST']]));

    const lost = sock.batch([probe(), probe()]);
    await settle();
    k.current().receiver.overrun(1);
    await expect(lost).rejects.toThrow(new NetlinkRequestError('ENOBUFS', 'netlink batch'));
  });

  it('replaces a socket that broke, failing only what was pending on it', async () => {
    const k = fakeKernel();
    const sock = new RtnlSocket(k.open);
    const pending = sock.request(probe(), 'get pending');
    k.current().receiver.failed('EIO');
    await expect(pending).rejects.toMatchObject({ errno: 'EIO' });
    expect(sock.info()).toBeUndefined();
    const next = sock.request(probe(), 'get next');
    expect(k.opened).toHaveLength(2);
    expect(sock.reopens).toBe(1);
    k.current().receiver.data(ack(k.current().sent[0]!.seq));
    await expect(next).resolves.toEqual([]);
  });

  it('rejects a request the kernel would not take, and one made after close', async () => {
    const k = fakeKernel();
    const sock = new RtnlSocket(k.open);
    k.failSends('EMSGSIZE');
    await expect(sock.request(probe(), 'get big')).rejects.toThrow(new NetlinkRequestError('EMSGSIZE', 'get big'));
    await expect(sock.batch([probe()])).rejects.toMatchObject({ errno: 'EMSGSIZE' });
    k.failSends(undefined);
    const pending = sock.request(probe(), 'get pending');
    sock.close();
    await expect(pending).rejects.toMatchObject({ errno: 'EBADF' });
    expect(k.current().closed).toBe(true);
    await expect(sock.request(probe(), 'get closed')).rejects.toMatchObject({ errno: 'EBADF' });
    expect(k.opened).toHaveLength(1);
  });
});
