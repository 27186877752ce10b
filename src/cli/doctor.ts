// `workcell doctor`: what isolation this host supports, and what to install or change for the rest.
import { loadConfig } from '../config.ts';
import { probeHost } from '../runtimes/probe.ts';

export async function doctor(json: boolean): Promise<number> {
  const config = loadConfig();
  const probes = await probeHost(config);
  if (json) {
    console.log(JSON.stringify(probes, null, 2));
  } else {
    const width = Math.max(...probes.map((p) => p.name.length));
    for (const probe of probes) console.log(`${probe.available ? 'yes' : ' no'}  ${probe.name.padEnd(width)}  ${probe.detail}`);
  }
  // Exit 0 when at least one sandbox runtime can run jobs here.
  return probes.some((p) => p.name === 'bwrap' && p.available) ? 0 : 1;
}
