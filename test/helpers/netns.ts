import { execFileSync } from "node:child_process";

/**
 * A network namespace of the test's own, joined to this one by a veth pair: a host on a non-loopback
 * address that never leaves this machine. Clients that treat loopback specially (docker never verifies
 * certificates of a registry on 127.0.0.0/8) talk to a server started inside it.
 */
export interface TestNetns {
  name: string;
  /** The namespace's own address (where servers started in it are reached). */
  address: string;
  /** The address of this side of the pair. */
  hostAddress: string;
  /** The command prefix that runs a program inside the namespace. */
  exec: string[];
  remove(): void;
}

function ip(args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

export function createTestNetns(): TestNetns {
  const tag = `${process.pid % 10_000}${Math.floor(Math.random() * 100)}`;
  const name = `berth-t${tag}`;
  const hostIf = `bth${tag}`;
  const nsIf = `btn${tag}`;
  // A /30 in 10.254.0.0/16 picked at random, so that test files running at once do not collide.
  const block = Math.floor(Math.random() * 16_384);
  const base = `10.254.${block >> 6}.${(block & 63) * 4}`;
  const octets = base.split(".").map(Number) as [number, number, number, number];
  const hostAddress = `${octets[0]}.${octets[1]}.${octets[2]}.${octets[3] + 1}`;
  const address = `${octets[0]}.${octets[1]}.${octets[2]}.${octets[3] + 2}`;
  const remove = () => {
    try {
      ip(["link", "del", hostIf]);
    } catch {}
    try {
      ip(["netns", "del", name]);
    } catch {}
  };
  try {
    ip(["netns", "add", name]);
    ip(["link", "add", hostIf, "type", "veth", "peer", "name", nsIf]);
    ip(["link", "set", nsIf, "netns", name]);
    ip(["addr", "add", `${hostAddress}/30`, "dev", hostIf]);
    ip(["link", "set", hostIf, "up"]);
    ip(["netns", "exec", name, "ip", "addr", "add", `${address}/30`, "dev", nsIf]);
    ip(["netns", "exec", name, "ip", "link", "set", nsIf, "up"]);
    ip(["netns", "exec", name, "ip", "link", "set", "lo", "up"]);
  } catch (err) {
    remove();
    throw new Error(`could not create a test network namespace (needs root and iproute2): ${String(err)}`);
  }
  return { name, address, hostAddress, exec: ["ip", "netns", "exec", name], remove };
}
