// The dashboard is served by the control plane at /ui/, from the files built here
// into dist/ (embedded in the strata binary). `npm run dev` proxies the API to a
// running `strata dev` on 127.0.0.1:9100.
import { readFileSync, writeFileSync } from 'node:fs';
import { defineConfig, type Plugin } from 'vite';

// dist/.gitignore is committed so that cargo finds the folder on a machine without
// Node; the build empties dist/, so put the file back afterwards, unchanged.
function keepGitignore(): Plugin {
  const path = new URL('./dist/.gitignore', import.meta.url);
  let text = '*\n!.gitignore\n';
  return {
    name: 'keep-dist-gitignore',
    buildStart() {
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        // First build: use the default.
      }
    },
    closeBundle() {
      writeFileSync(path, text);
    },
  };
}

export default defineConfig({
  base: '/ui/',
  plugins: [keepGitignore()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
  },
  server: {
    proxy: {
      '/api': 'http://127.0.0.1:9100',
      '/metrics': 'http://127.0.0.1:9100',
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
  },
});
