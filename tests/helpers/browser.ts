// Opens a page in headless Chromium (the Debian package setup installs, driven by playwright-core)
// and says what a person would see: which charts drew, and any error on the console.
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { tools } from './tools.js';

export interface PageCheck {
  /** Per chart canvas (its data-chart name): how many of its pixels are painted. */
  charts: Record<string, number>;
  /** Console errors and uncaught exceptions. */
  errors: string[];
  /** Requests the page made beyond its own file: a page meant to work offline makes none. */
  requests: string[];
}

export async function checkPage(htmlPath: string, screenshotPath: string): Promise<PageCheck> {
  // Without the background services: on a machine with no network they only fail, noisily.
  const quiet = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
  const browser = await chromium.launch({ executablePath: tools.chromium, args: quiet });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const errors: string[] = [];
    const requests: string[] = [];
    const url = pathToFileURL(htmlPath).href;
    page.on('console', (message) => message.type() === 'error' && errors.push(message.text()));
    page.on('pageerror', (error) => errors.push(error.message));
    page.on('request', (request) => request.url() !== url && requests.push(request.url()));
    await page.goto(url);
    // In the page's own JavaScript (this project's TypeScript has no DOM types).
    await page.waitForFunction('window.reportDrawn === true', undefined, { timeout: 15_000 }).catch(() => errors.push('the charts never finished drawing'));
    const charts: Record<string, number> = await page.evaluate(`(() => {
      const painted = {};
      for (const canvas of document.querySelectorAll('canvas.chart')) {
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) count++;
        painted[canvas.dataset.chart] = count;
      }
      return painted;
    })()`);
    await mkdir(dirname(screenshotPath), { recursive: true });
    await page.screenshot({ path: screenshotPath, fullPage: true });
    return { charts, errors, requests };
  } finally {
    await browser.close();
  }
}
