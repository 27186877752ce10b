// Test "hosts" on one machine: network namespaces the test makes itself, each with its own loopback and one macvlan
// interface on a segment shared with the test's namespace (the "bridge address", where the test runs its servers), on a private /24 of their own. A process started in one
// (nsenter --net) reaches the others and that address and nothing else:
// no route out. It shares the test's files and mounts, as processes on hosts with one shared volume would.
// remove() deletes every namespace and link; a test process that ends first deletes them too.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { runCommand } from '../../src/runtimes/probe.ts';

export interface TestHost {
  name: string;
  /** The namespace (/run/netns/<ns>). */
  ns: string;
  address: string;
}

export interface TestNetwork {
  /** The test's own address on the segment: servers the hosts must reach listen here. */
  bridgeAddress: string;
  /** The /24 every host is on, e.g. 10.231.7.0/24. */
  subnet: string;
  hosts: Map<string, TestHost>;
  /** The command line that runs `argv` in a host's namespace. */
  command(host: string, argv: string[]): [string, string[]];
  remove(): Promise<void>;
}

async function ip(...args: string[]): Promise<void> {
  const result = await runCommand('ip', args, { timeoutMs: 30_000 });
  if (!result.ok) throw new Error(`ip ${args.join(' ')} failed (${result.code}): ${result.stderr.trim()}`);
}

export async function createTestNetwork(names: string[]): Promise<TestNetwork> {
  const tag = randomBytes(3).toString('hex');
  const octet = 16 + (randomBytes(1)[0]! % 200);
  const prefix = `10.231.${octet}`;
  const parent = `wcd${tag}`;
  const gateway = `wcg${tag}`;
  const hosts = new Map<string, TestHost>();
  const namespaces: string[] = [];
  const links: string[] = [gateway, parent];
  const removeAll = async () => {
    for (const ns of namespaces) await runCommand('ip', ['netns', 'delete', ns], { timeoutMs: 30_000 }).catch(() => undefined);
    for (const link of links) await runCommand('ip', ['link', 'delete', link], { timeoutMs: 30_000 }).catch(() => undefined);
  };
  const onExit = () => {
    // Last resort when the test process ends without remove(): synchronous, best effort.
    for (const ns of namespaces) {
      try {
        execFileSync('ip', ['netns', 'delete', ns]);
      } catch {
        // already gone
      }
    }
    for (const link of links) {
      try {
        execFileSync('ip', ['link', 'delete', link]);
      } catch {
        // already gone
      }
    }
  };
  process.once('exit', onExit);
  try {
    // One L2 segment of macvlan interfaces (bridge mode), rather than veths into a Linux bridge: with br_netfilter
    // loaded (Docker loads it, and sets FORWARD's policy to DROP) bridged packets between the hosts would go through
    // the host's firewall and be dropped; macvlan's own switching never meets it. Its parent is one end of a veth
    // pair that carries nothing (a dummy link would do, but not every kernel has the module).
    await ip('link', 'add', parent, 'type', 'veth', 'peer', 'name', `${parent}p`);
    await ip('link', 'set', parent, 'up');
    await ip('link', 'set', `${parent}p`, 'up');
    await ip('link', 'add', gateway, 'link', parent, 'type', 'macvlan', 'mode', 'bridge');
    await ip('addr', 'add', `${prefix}.1/24`, 'dev', gateway);
    await ip('link', 'set', gateway, 'up');
    for (const [index, name] of names.entries()) {
      const ns = `wc-${tag}-${index}`;
      const link = `wcv${tag}${index}`;
      const address = `${prefix}.${10 + index}`;
      await ip('netns', 'add', ns);
      namespaces.push(ns);
      await ip('link', 'add', link, 'link', parent, 'type', 'macvlan', 'mode', 'bridge');
      await ip('link', 'set', link, 'netns', ns);
      await ip('-n', ns, 'link', 'set', link, 'name', 'eth0');
      await ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0');
      await ip('-n', ns, 'link', 'set', 'eth0', 'up');
      await ip('-n', ns, 'link', 'set', 'lo', 'up');
      hosts.set(name, { name, ns, address });
    }
  } catch (error) {
    await removeAll();
    process.removeListener('exit', onExit);
    throw error;
  }
  return {
    bridgeAddress: `${prefix}.1`,
    subnet: `${prefix}.0/24`,
    hosts,
    command(host, argv) {
      const entry = hosts.get(host);
      if (entry === undefined) throw new Error(`no test host ${host}`);
      // nsenter enters the network namespace only; `ip netns exec` would also remount /sys (without its cgroups).
      return ['nsenter', [`--net=/run/netns/${entry.ns}`, '--', ...argv]];
    },
    async remove() {
      await removeAll();
      process.removeListener('exit', onExit);
    },
  };
}
