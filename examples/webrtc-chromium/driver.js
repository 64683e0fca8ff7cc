// Drives headless Chromium (puppeteer-core) through page.html: one JsSIP call, JSON on stdout.
// usage: node driver.js WS_URL TARGET_URI SECONDS PAGE_URL      (the browser calls TARGET_URI)
//        node driver.js WS_URL callee:USER SECONDS PAGE_URL     (the browser answers as USER;
//                                                                "READY" on stderr when it can)
const puppeteer = require('puppeteer-core');
(async () => {
  const [ws, target, seconds, pageUrl] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
           '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
           '--autoplay-policy=no-user-gesture-required'],
  });
  const page = await browser.newPage();
  page.on('console', (m) => process.stderr.write('console: ' + m.text() + '\n'));
  await page.goto(pageUrl);
  if (target.startsWith('callee:')) {
    await page.evaluate((w, u, s) => window.awaitCall(w, u, Number(s)), ws, target.slice(7), seconds);
    while (!(await page.evaluate(() => window.result.ready || window.result.done))) {
      await new Promise((ok) => setTimeout(ok, 100));
    }
    process.stderr.write('READY\n');
  } else {
    await page.evaluate((w, t, s) => window.startCall(w, t, Number(s)), ws, target, seconds);
  }
  const deadline = Date.now() + 60000;
  let r;
  while (Date.now() < deadline) {
    r = await page.evaluate(() => window.result);
    if (r.done) break;
    await new Promise((ok) => setTimeout(ok, 250));
  }
  console.log(JSON.stringify(r, null, 1));
  await browser.close();
})();
