// What the sandbox image has installed, as the system prompt's "Installed" line. Read from the image's own package
// lists (image/packages.txt, image/npm-packages.txt, the lists the image is built from), so the prompt changes when
// they do: a package added there shows up here by its own name unless it is listed below as not for the agent. Only
// the wording is chosen here (groups, the commands a package provides); it must never name software the lists do not
// hold.
import { debianSuite, readNpmPackageList, readPackageList, type NpmPackage } from '../runtimes/image.ts';

export interface ImagePackages {
  /** Debian packages, in the list's order. */
  debian: readonly string[];
  npm: readonly NpmPackage[];
}

/** The Python 3 of each Debian suite the image may be built on (a new suite does not compile until it is here). */
const pythonVersionBySuite: Record<typeof debianSuite, string> = { bookworm: '3.11' };

/**
 * Packages the agent does not use by name: the services behind its tools (Jupyter, the VNC viewer people watch),
 * fonts, certificates, the container's PID 1, and a dependency that is only there for matplotlib.
 */
export const packagesNotShown: ReadonlySet<string> = new Set([
  'jupyter-server',
  'jupyter-core',
  'jupyter-client',
  'python3-ipykernel',
  'python3-nbclassic',
  'python3-munkres',
  'x11vnc',
  'novnc',
  'websockify',
  'xfonts-base',
  'fontconfig',
  'fonts-dejavu-core',
  'tini',
  'ca-certificates',
]);

/** The desktop's programs: listed only when the gui tool is offered. */
const desktopPackages: ReadonlySet<string> = new Set(['xvfb', 'openbox', 'xterm', 'xdotool', 'scrot', 'x11-utils']);

/** Packages whose commands are not named like them: the name, then the commands. */
const commandsOf: Readonly<Record<string, string>> = {
  xvfb: 'Xvfb',
  'build-essential': 'build-essential (gcc, g++, make)',
  ripgrep: 'ripgrep (rg)',
  'vim-tiny': 'vim-tiny (vi)',
  iproute2: 'iproute2 (ip, ss)',
  'x11-utils': 'x11-utils (xwininfo, xprop)',
};

/** npm packages as a model knows them, with their commands. */
const npmShownAs: Readonly<Record<string, (version: string) => string>> = {
  npm: (version) => `npm ${version} (npm, npx)`,
  typescript: (version) => `TypeScript ${version} (tsc)`,
};

let cached: ImagePackages | undefined;

/** The image's package lists, read once. */
export function imagePackages(): ImagePackages {
  cached ??= { debian: readPackageList(), npm: readNpmPackageList() };
  return cached;
}

const list = (items: readonly string[]) => items.join(', ');

/** One line for the prompt: Python and its libraries, Node.js and its packages, the command-line tools, the desktop. */
export function installedLine(packages: ImagePackages, options: { desktop: boolean }): string {
  const shown = packages.debian.filter((name) => !packagesNotShown.has(name) && (options.desktop || !desktopPackages.has(name)));
  const pythonLibraries = shown.filter((name) => name.startsWith('python3-')).map((name) => name.slice('python3-'.length));
  const desktop = shown.filter((name) => desktopPackages.has(name)).map((name) => commandsOf[name] ?? name);
  const tools = shown.filter((name) => name !== 'python3' && !name.startsWith('python3-') && !desktopPackages.has(name)).map((name) => commandsOf[name] ?? name);
  // `workcell` packages are sandboxd's own (node-pty), off the agent's PATH and require path.
  const nodePackages = packages.npm.filter((item) => item.where !== 'workcell').map((item) => npmShownAs[item.name]?.(item.version) ?? `${item.name} ${item.version}`);

  const groups: string[] = [];
  if (shown.includes('python3')) {
    const python = `Python ${pythonVersionBySuite[debianSuite]} (python3)`;
    groups.push(pythonLibraries.length === 0 ? python : `${python} with ${list(pythonLibraries)}`);
  }
  const node = `Node.js ${process.versions.node.split('.')[0]} (node)`;
  groups.push(nodePackages.length === 0 ? node : `${node} with ${list(nodePackages)}`);
  if (tools.length > 0) groups.push(`command-line tools: ${list(tools)}`);
  if (desktop.length > 0) groups.push(`for the desktop: ${list(desktop)}`);
  return `- Installed: ${groups.join('; ')}.`;
}
