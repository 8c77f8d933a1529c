// This file is part of the GNU Health imaging modules.
// The COPYRIGHT file at the top level of this repository contains the full
// copyright notices and license terms.
//
// End-to-end test of health_imaging and health_orthanc in the sao web
// client, driven like a user in headless Chromium (playwright-core, the
// system's /usr/bin/chromium: no browser is downloaded).
//
// It needs a running demo (bin/demo, or tests/test_browser.py which starts
// one) and walks through:
//
//   log in -> Health / Imaging / Dx Imaging - New: patient Betz, two tests,
//   Request -> Dx Imaging Requests: open a new draft request, Request,
//   Generate Results -> open the result, Studies tab: add an Orthanc study
//   of the patient, save, its Audit tab: the attachment -> Health /
//   Imaging / Orthanc / Patients: a linked
//   patient -> Health / Configuration / Orthanc / Servers: open the server,
//   Sync -> Dx Imaging - Results: the demo's draft result of Ana Betz, its
//   Studies tab, open the DX study, open its series, Show Preview (the
//   image shows), Attach to Result -> back on the result, reloaded: the
//   Images tab lists the .png -> Complete, confirm: Done -> Dx Imaging
//   Requests, Requested: the demo's request of John Smith, Worklist tab:
//   Published with its entry, and its accession number -> Health /
//   Imaging / Orthanc / Studies to Review: the list loads -> Upload DICOM
//   Files: the wizard opens on the default server, Cancel -> Reporting
//   (researchSteps aside) -> Health / Imaging / Research / Subjects: enrol
//   Ana Betz in the demo's project, Copy to Project from her subject ->
//   the project's Copy Log: the copies done -> Query PACS: the node's
//   status, the priors of the patient on the hospital PACS, Retrieve: the
//   retrieval done, the priors among the studies, linked -> the DICOM
//   Nodes list.
//
// It fails on any sao error dialog (application error, user error or
// warning, "invalid form" info bar) and on any browser console error or
// uncaught page error, except the known-harmless noise in IGNORED below.
//
// Environment:
//   E2E_URL          the web client (default http://127.0.0.1:8000/)
//   E2E_LOGIN        user name (default admin)
//   E2E_PASSWORD     password (default gnuhealth)
//   E2E_DATABASE     database, when the server has several (default health)
//   E2E_SCREENSHOTS  where to save the screenshots (default screenshots/ at
//                    the root of the repository)
//   E2E_CHROMIUM     the Chromium executable (default /usr/bin/chromium)
//   E2E_TIMEOUT      seconds allowed for the whole run (default 220)
//
// Exit status: 0 when every step passed, 1 otherwise (the failing step, the
// errors seen and a failure.png screenshot tell what happened).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const URL_ = process.env.E2E_URL || 'http://127.0.0.1:8000/';
const LOGIN = process.env.E2E_LOGIN || 'admin';
const PASSWORD = process.env.E2E_PASSWORD || 'gnuhealth';
const DATABASE = process.env.E2E_DATABASE || 'health';
const SHOTS = path.resolve(
    process.env.E2E_SCREENSHOTS || path.join(ROOT, 'screenshots'));
const CHROMIUM = process.env.E2E_CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 1000 * Number(process.env.E2E_TIMEOUT || 220);

// The demo data (demo/data.py): the patient we order for, two tests of the
// catalogue and the sample study of that patient that we attach.
const PATIENT = 'Betz, Ana';
const PATIENT_SEARCH = 'Betz';
const TESTS = [
    {search: 'Chest', name: 'Chest X-ray, PA and lateral'},
    {search: 'Brain MRI', name: 'Brain MRI'},
];
const STUDY = {search: 'Brain', name: 'Brain MRI'};
// The draft result that the demo made for the patient, with her DX study
// attached, and the requested test of John Smith published as a worklist
// entry (demo/data.py)
const DX_RESULT = {
    test: 'Chest X-ray, PA and lateral',
    study: 'Chest X-ray PA and lateral',
};
const WORKLIST = {patient: 'Smith, John', test: 'Abdominal ultrasound'};

// Console errors we ignore, and why:
// - GET /locale/<lang>.json answered 405: sao always asks for its
//   translation files, even for English which it does not ship; trytond's
//   static file handler answers 405 for a missing file.  Sao falls back to
//   the built-in English strings.
// - GET/POST /<database>/bus answered 501: sao long-polls the bus for
//   notifications; trytond answers 501 when the bus is not enabled
//   ([bus] allow_subscribe), as in the demo.  Nothing uses it here.
// Only the "Failed to load resource" message of exactly those URLs and
// statuses is ignored; warnings (e.g. moment's deprecation warning about
// fullcalendar's locales) are not errors and are not collected.
const IGNORED = [
    {url: /\/locale\/[A-Za-z_-]+\.json$/, text: /status of 405\b/},
    {url: /\/[^/]+\/bus$/, text: /status of 501\b/},
];

const LAUNCH_ARGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
    '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
];

const errors = [];          // console errors, page errors, sao dialogs
const ignored = [];         // the noise we ignored, reported at the end
const shots = [];
const started = Date.now();
let step = '(start)';

function log(message) {
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(`[e2e ${seconds.padStart(5)}s] ${message}`);
}

class StepError extends Error {}

function checkErrors() {
    if (errors.length) {
        throw new StepError(
            `${errors.length} error(s) in the browser:\n  ` +
            errors.join('\n  '));
    }
}

// Poll fn() until it returns a truthy value; fail at once on any error
// seen in the browser (an error dialog makes the awaited screen never come)
async function until(fn, what, timeout = 15000) {
    const deadline = Date.now() + timeout;
    let last;
    for (;;) {
        checkErrors();
        try {
            const value = await fn();
            if (value) {
                checkErrors();
                return value;
            }
        } catch (error) {
            if (error instanceof StepError) {
                throw error;
            }
            last = error;
        }
        if (Date.now() > deadline) {
            throw new StepError(`timed out after ${timeout / 1000}s waiting `
                + `for ${what}` + (last ? ` (last error: ${last.message})`
                    : ''));
        }
        await new Promise(resolve => setTimeout(resolve, 150));
    }
}

async function main() {
    fs.mkdirSync(SHOTS, {recursive: true});
    if (!fs.existsSync(CHROMIUM)) {
        throw new Error(`Chromium not found at ${CHROMIUM} `
            + '(apt-get install chromium, or set E2E_CHROMIUM)');
    }
    const browser = await chromium.launch({
        executablePath: CHROMIUM, args: LAUNCH_ARGS, headless: true});
    const context = await browser.newContext({
        viewport: {width: 1400, height: 900}, locale: 'en-US'});
    context.setDefaultTimeout(15000);
    const page = await context.newPage();

    page.on('console', message => {
        if (message.type() !== 'error') {
            return;
        }
        const url = message.location().url || '';
        const text = message.text();
        if (IGNORED.some(i => i.url.test(url) && i.text.test(text))) {
            ignored.push(`${text} (${url})`);
            return;
        }
        errors.push(`console error during "${step}": ${text}`
            + (url ? ` (${url}:${message.location().lineNumber})` : ''));
    });
    page.on('pageerror', error => {
        errors.push(`page error during "${step}": ${error.message}\n    `
            + String(error.stack || '').split('\n').slice(1, 4).join('\n    '));
    });
    // Sao's error dialogs (Sao.common.error/warning/userwarning) and the
    // danger info bar of an invalid form, reported as soon as they show
    await page.exposeBinding('__e2eSaoError', (source, text) => {
        errors.push(`sao error dialog during "${step}": ${text}`);
    });
    await page.addInitScript(() => {
        const SELECTOR = '.error-dialog, .warning-dialog, '
            + '.user-warning-dialog, .infobar .alert-danger, '
            + '.infobar .alert-error';
        const seen = new WeakSet();
        const scan = () => {
            for (const el of document.querySelectorAll(SELECTOR)) {
                if (!seen.has(el) && el.textContent.trim()) {
                    seen.add(el);
                    window.__e2eSaoError(
                        el.innerText.trim().replace(/\s+\n/g, '\n'));
                }
            }
        };
        new MutationObserver(scan).observe(document, {
            childList: true, subtree: true, characterData: true});
    });

    // sao's calls to the server in flight (the bus aside): a list can be
    // loaded twice in a row (opening its tab, then choosing a domain tab),
    // and a row opened in between loses its record to the second load
    let calls = 0;
    const isCall = request => request.method() === 'POST'
        && !request.url().endsWith('/bus');
    page.on('request', request => {
        calls += isCall(request) ? 1 : 0;
    });
    for (const event of ['requestfinished', 'requestfailed']) {
        page.on(event, request => {
            calls -= isCall(request) ? 1 : 0;
        });
    }

    // Wait until sao has had no call in flight for a few polls
    async function settled() {
        let quiet = 0;
        await until(() => {
            quiet = calls ? 0 : quiet + 1;
            return quiet >= 3;
        }, 'the calls to the server to finish');
    }

    const pane = page.locator('#tabcontent > .tab-pane.active');
    const toolbar = pane.locator('nav.toolbar');
    const dialog = page.locator('.modal.in .modal-dialog').last();

    async function shot(name) {
        // sao's off-canvas menu sometimes leaves the body scrolled sideways
        await page.evaluate(() => {
            document.body.scrollLeft = 0;
        });
        await page.waitForTimeout(300);  // let animations settle
        const file = path.join(SHOTS, name);
        await page.screenshot({path: file});
        shots.push(file);
        log(`  screenshot ${file}`);
    }

    async function activeTab() {
        return (await page.locator('#tablist > li.active').innerText())
            .replace('×', '').trim();
    }

    async function waitTab(title) {
        await until(async () => (await activeTab()) === title,
            `the "${title}" tab`);
    }

    // The rows of the list of the active tab
    function listRows() {
        return pane.locator('.content-box table.tree').first()
            .locator('> tbody > tr');
    }

    // The cells of a list row, keyed by column title
    async function rowCells(row) {
        const table = pane.locator('.content-box table.tree').first();
        const titles = await table.locator('> thead > tr > th')
            .allInnerTexts();
        const cells = await row.locator('> td').allInnerTexts();
        const result = {};
        titles.forEach((title, i) => {
            if (title.trim()) {
                result[title.trim()] = (cells[i] || '').trim();
            }
        });
        return result;
    }

    // Open the record of a list row in its form (double-click, like a user;
    // on the first column, which is never a link)
    async function openRow(row) {
        await settled();
        await row.locator('> td').nth(2).dblclick();
        await until(() => pane.locator('.form').first().isVisible(),
            'the form view');
    }

    async function menuRows() {
        return page.locator('#menu tbody tr').evaluateAll(rows => rows.map(
            row => ({
                text: (row.querySelector('.column-char')?.textContent || '')
                    .trim(),
                level: parseFloat(
                    row.querySelector('.expander img')?.style.marginLeft
                    || '0'),
            })));
    }

    // Open a menu entry by its path, expanding the parents as needed
    async function openMenu(...names) {
        const rows = page.locator('#menu tbody tr');
        let index = -1;
        for (const [level, name] of names.entries()) {
            const where = names.slice(0, level + 1).join(' / ');
            // sao reloads the menu after some actions (e.g. the Module
            // Configuration wizard): wait for the entry to be there
            let infos;
            const find = () => infos.findIndex((info, i) => i > index
                && info.level === level && info.text === name);
            await until(async () => {
                infos = await menuRows();
                return find() >= 0;
            }, `menu entry ${where}`);
            const found = find();
            index = found;
            const expanded = () => infos[found + 1]
                && infos[found + 1].level > level;
            if (level < names.length - 1 && !expanded()) {
                // A click that lands while sao still renders the menu (just
                // after login or another expansion) may be lost: click again
                // when nothing happened after a while
                let clicked = 0;
                await until(async () => {
                    infos = await menuRows();
                    if (expanded()) {
                        return true;
                    }
                    if (Date.now() - clicked > 2000) {
                        await rows.nth(found).locator('.expander').click();
                        clicked = Date.now();
                    }
                    return false;
                }, `menu entry ${where} to expand`);
            }
        }
        await rows.nth(index).locator('.column-char').click();
    }

    // Type in a many2one / many2many entry and pick the completion
    async function complete(input, search, choice) {
        const item = input.locator('xpath=..').locator('li.completion a',
            {hasText: choice});
        // A form still loading its defaults may redraw the field and lose
        // what was typed: type again then
        for (let attempt = 1; ; attempt++) {
            await input.click();
            await input.fill('');
            await input.pressSequentially(search, {delay: 20});
            try {
                await until(() => item.first().isVisible(),
                    `the completion "${choice}" for "${search}"`,
                    attempt < 3 ? 5000 : 15000);
                break;
            } catch (error) {
                const held = await input.inputValue();
                if (attempt < 3 && !held.includes(search)) {
                    log(`  "${search}" lost from the field: typed again`);
                    continue;
                }
                // What the field holds and offers tells why
                const shown = await input.locator('xpath=..')
                    .locator('li.completion').allInnerTexts();
                throw new StepError(`${error.message}: the field holds `
                    + `"${held}" and offers ${JSON.stringify(shown)}`);
            }
        }
        await item.first().click();
    }

    async function selected(select) {
        return select.evaluate(e => e.options[e.selectedIndex]?.text || '');
    }

    // Show the list of the active tab: sao brings back the tab already
    // open for the same menu entry, maybe on the form of a record
    async function showList() {
        const list = pane.locator('.tab-domain');
        if (!(await list.isVisible())) {
            await toolbar.getByRole('button', {name: 'Switch'}).click();
        }
        await until(() => list.isVisible(), 'the list view');
    }

    // Open a page of a form's notebook by its title
    async function notebookTab(scope, title) {
        const tab = scope.locator('.form-notebook > .nav-tabs a',
            {hasText: new RegExp(`^\\s*${title}\\s*$`)}).first();
        await tab.click();
        await until(async () => (await tab.locator('xpath=..')
            .getAttribute('class') || '').includes('active'),
            `the ${title} tab`);
    }

    // Press a button of a record (in scope) and wait for the server to
    // answer its call (model.<model>.<method>) and the form to be shown
    // again
    async function clickButton(scope, name, method) {
        const button = scope.getByRole('button', {name, exact: true});
        const answered = page.waitForResponse(response => (
            response.request().postData() || '').includes(
            `.${method}"`), {timeout: 30000});
        answered.catch(() => {});  // awaited below, unless the click fails
        await button.click();
        await answered;
        await until(() => button.isEnabled(), `${name} to be done`);
    }

    // Close the top dialog with its main button (Close, Apply changes, OK)
    async function closeDialog() {
        await dialog.locator('.modal-footer button.btn-primary').last()
            .click();
    }

    // Reload the record of the form from the server
    async function reloadForm() {
        await toolbar.getByRole('button', {name: 'Reload/Undo'}).click();
    }

    // The Audit tab of the result just saved lists the study attached by
    // hand, by the user logged in (issue #10)
    async function resultAuditStep() {
        await notebookTab(pane, 'Audit');
        const entry = pane.locator('.form-notebook .tab-pane.active')
            .locator('tbody tr', {hasText: 'Attached to a Result'})
            .filter({hasText: STUDY.name});
        await until(() => entry.count(),
            `an audit entry of ${STUDY.name} attached`);
        const cells = (await entry.first().locator('> td').allInnerTexts())
            .map(text => text.trim()).filter(text => text);
        log(`  audit: ${cells.join(' | ')}`);
        await shot('06b-result-audit.png');
    }

    async function run(name, fn) {
        step = name;
        checkErrors();
        log(name);
        await fn();
        checkErrors();
    }

    try {
        await run('log in', async () => {
            await page.goto(URL_);
            await until(() => page.locator('#login').isVisible(),
                'the login dialog');
            const select = page.locator('select#database');
            if (await select.isVisible()) {
                await select.selectOption(DATABASE);
            }
            await page.locator('#login').fill(LOGIN);
            await shot('01-login.png');
            await page.getByRole('button', {name: 'Login'}).click();
            const password = page.locator('#ask-dialog-entry');
            await until(() => password.isVisible(), 'the password dialog');
            await password.fill(PASSWORD);
            await dialog.getByRole('button', {name: 'OK'}).click();
            // The first login after trytond started loads the database's
            // pool (all the GNU Health modules): give it time
            await until(async () => (await menuRows()).some(
                r => r.text === 'Health'), 'the menu with Health', 90000);
            log('  logged in');
            // At the first login Tryton opens the Module Configuration
            // wizard (ir.module.config_wizard): close it like a user would
            const config = page.locator('#tablist > li',
                {hasText: 'Module Configuration'});
            try {
                await config.waitFor({timeout: 5000});
            } catch {
                return;  // already done on this database
            }
            await waitTab('Module Configuration');
            await pane.getByRole('button', {name: 'Cancel'}).click();
            await until(async () => !(await config.count()),
                'the Module Configuration wizard to close');
        });

        await run('Health / Imaging / Dx Imaging - New: order two tests '
                + `for ${PATIENT}`, async () => {
            await openMenu('Health', 'Imaging', 'Dx Imaging - New');
            await until(async () => (await dialog.locator('.model-title')
                .innerText()) === 'Dx Imaging - New', 'the order wizard');
            await complete(dialog.locator('input[name="patient"]'),
                PATIENT_SEARCH, PATIENT);
            await until(async () => (await dialog.locator(
                'input[name="patient"]').inputValue()) === PATIENT,
                `patient ${PATIENT}`);
            const tests = dialog.locator('input[name="tests"]');
            const box = dialog.locator('div.form-many2many',
                {has: page.locator('input[name="tests"]')});
            for (const test of TESTS) {
                await complete(tests, test.search, test.name);
                await until(() => box.locator('tbody tr',
                    {hasText: test.name}).count(), `test ${test.name}`);
            }
            await dialog.locator('textarea[name="comment"]')
                .fill('Browser test order');
            await shot('02-order-wizard.png');
            await dialog.getByRole('button', {name: 'Request', exact: true})
                .click();
            await until(async () => !(await page.locator('.modal.in')
                .count()), 'the wizard to close');
        });

        await run('Dx Imaging Requests: the new draft requests', async () => {
            await openMenu('Health', 'Imaging', 'Dx Imaging Requests');
            await waitTab('Dx Imaging Requests');
            await pane.locator('.tab-domain a', {hasText: /^\s*Draft\b/})
                .click();
            for (const test of TESTS) {
                await until(() => listRows().filter({hasText: PATIENT})
                    .filter({hasText: test.name}).count(),
                    `a draft request of ${PATIENT} for ${test.name}`);
            }
            await shot('03-requests-list.png');
        });

        await run('open a draft request, press Request', async () => {
            const row = listRows().filter({hasText: PATIENT})
                .filter({hasText: TESTS[1].name}).first();
            await openRow(row);
            const state = pane.locator('select[name="state"]');
            await until(async () => (await selected(state)) === 'Draft',
                'a request in Draft');
            await pane.getByRole('button', {name: 'Request', exact: true})
                .click();
            await until(async () => (await selected(state)) === 'Requested',
                'the request to be Requested');
            await until(() => pane.getByRole('button',
                {name: 'Generate Results', exact: true}).isVisible(),
                'the Generate Results button');
            await shot('04-request-form.png');
        });

        await run('Generate Results: the result opens', async () => {
            await pane.getByRole('button',
                {name: 'Generate Results', exact: true}).click();
            await waitTab('Dx Imaging - Results');
            const row = listRows().filter({hasText: PATIENT})
                .filter({hasText: TESTS[1].name});
            await until(async () => (await listRows().count()) === 1
                && (await row.count()) === 1, 'the generated result');
            await shot('05-result-list.png');
            await openRow(row.first());
            await until(async () => (await pane.locator(
                'input[name="patient"]').inputValue()) === PATIENT,
                'the result form');
        });

        await run('the result\'s Studies tab: add an Orthanc study, save',
                async () => {
            await pane.locator('.form-notebook > .nav-tabs a',
                {hasText: /^\s*Studies\s*$/}).click();
            const input = pane.locator('input[name="studies"]');
            await until(() => input.isVisible(), 'the Studies tab');
            const box = pane.locator('div.form-many2many',
                {has: page.locator('input[name="studies"]')});
            await complete(input, STUDY.search, STUDY.name);
            const row = box.locator('tbody tr', {hasText: STUDY.name});
            await until(() => row.count(), `the study ${STUDY.name}`);
            await toolbar.getByRole('button', {name: 'Save', exact: true})
                .click();
            await until(() => pane.locator('.infobar .alert-info',
                {hasText: 'Record saved.'}).isVisible(), 'Record saved.');
            // Reload from the server: the study is really attached
            await toolbar.getByRole('button', {name: 'Reload/Undo'})
                .click();
            await until(() => row.count(), 'the saved study after reload');
            const cells = (await row.first().locator('> td').allInnerTexts())
                .map(text => text.trim()).filter(text => text);
            log(`  study: ${cells.join(' | ')}`);
            await shot('06-result-studies.png');
        });

        await run('the result\'s Audit tab: the study attached by hand',
            resultAuditStep);

        await run('Health / Imaging / Orthanc / Patients: a linked patient',
                async () => {
            await openMenu('Health', 'Imaging', 'Orthanc', 'Patients');
            await waitTab('Patients');
            await pane.locator('.tab-domain a', {hasText: /^\s*Linked\b/})
                .click();
            const linked = await until(async () => {
                for (const row of await listRows().all()) {
                    const cells = await rowCells(row);
                    if (cells.Patient) {
                        return cells;
                    }
                }
                return null;
            }, 'an Orthanc patient with the Patient column filled');
            log(`  linked: ${linked.Name} (${linked.PatientID}) -> `
                + `${linked.Patient}`);
            await shot('07-orthanc-patients.png');
        });

        await run('Health / Configuration / Orthanc / Servers: Sync',
                async () => {
            await openMenu('Health', 'Configuration', 'Orthanc', 'Servers');
            await waitTab('Servers');
            // The clinical server: the research one is never synced
            const server = listRows().filter({hasText: 'Local Orthanc'});
            await until(() => server.count(), 'the Local Orthanc server');
            await openRow(server.first());
            const syncTime = pane.locator('input[name="sync_time"]');
            // The demo server has been synced: wait for the record's values
            // before reading the old Last Sync
            await until(async () => await pane.locator('input[name="label"]')
                .inputValue() && await syncTime.inputValue(),
                'the server form with its Last Sync');
            const before = await syncTime.inputValue();
            await pane.getByRole('button', {name: 'Sync', exact: true})
                .click();
            await until(async () => {
                const value = await syncTime.inputValue();
                return value && value !== before;
            }, `Last Sync to change from "${before}"`, 30000);
            const error = await pane.locator('textarea[name="last_error"]')
                .inputValue().catch(() => '');
            if (error.trim()) {
                throw new StepError(`the sync reported: ${error}`);
            }
            log(`  Last Sync: ${before} -> ${await syncTime.inputValue()}`);
            await shot('08-server-form.png');
        });

        // Issue #6: the result of the demo with a DX study of the patient
        // (demo/data.py), previews, completing a result, worklists, the
        // studies to review and the upload wizard
        await run(`Dx Imaging - Results: the demo result of ${PATIENT} with `
                + 'its DX study -> study -> series: Show Preview',
                async () => {
            await openMenu('Health', 'Imaging', 'Dx Imaging - Results');
            await waitTab('Dx Imaging - Results');
            await showList();
            await pane.locator('.tab-domain a', {hasText: /^\s*Draft\b/})
                .click();
            const row = listRows().filter({hasText: PATIENT})
                .filter({hasText: DX_RESULT.test});
            await until(async () => (await row.count()) === 1,
                `the draft result of ${PATIENT} for ${DX_RESULT.test}`);
            await openRow(row.first());
            await until(async () => (await pane.locator(
                'input[name="patient"]').inputValue()) === PATIENT,
                'the result form');
            await notebookTab(pane, 'Studies');
            const study = pane.locator('div.form-many2many',
                {has: page.locator('input[name="studies"]')})
                .locator('tbody tr', {hasText: DX_RESULT.study});
            await until(() => study.count(),
                `the study ${DX_RESULT.study} on the Studies tab`);
            await study.first().locator('> td', {hasText: DX_RESULT.study})
                .first().dblclick();
            await until(async () => (await page.locator('.modal.in').count())
                === 1 && (await dialog.locator('input[name="description"]')
                    .inputValue()) === DX_RESULT.study, 'the study form');
            const series = dialog.locator('div.form-one2many')
                .locator('tbody tr', {hasText: 'DX'});
            await until(() => series.count(), 'a DX series of the study');
            await shot('09-study-form.png');
            await series.first().locator('> td', {hasText: 'DX'}).first()
                .dblclick();
            await until(async () => (await page.locator('.modal.in').count())
                === 2 && dialog.getByRole('button',
                    {name: 'Show Preview', exact: true}).isVisible(),
                'the series form with Show Preview');
            await clickButton(dialog, 'Show Preview', 'fetch_preview');
            const img = dialog.locator('.form-image img.center-block');
            await until(() => img.evaluate(e => Boolean(e.getAttribute('src'))
                && e.complete && e.naturalWidth > 0),
                'the preview image', 30000);
            const size = await img.evaluate(
                e => `${e.naturalWidth}x${e.naturalHeight}`);
            log(`  preview: ${size} pixels`);
            await shot('10-series-preview.png');
        });

        await run('Attach to Result: the result lists the .png on its Images '
                + 'tab', async () => {
            await clickButton(dialog, 'Attach to Result', 'attach_preview');
            // Close the series, then the study, like a user
            for (const count of [1, 0]) {
                await closeDialog();
                await until(async () => (await page.locator('.modal.in')
                    .count()) === count, `${count} dialog(s) left open`);
            }
            await reloadForm();
            await notebookTab(pane, 'Images');
            const image = pane.locator('.form-notebook .tab-pane.active')
                .locator('tbody tr', {hasText: '.png'});
            await until(() => image.count(), 'a .png on the Images tab');
            log(`  attached: ${(await image.first().innerText())
                .replace(/\s+/g, ' ').trim()}`);
            await shot('11-result-images.png');
        });

        await run('Complete the result (confirmed): Done', async () => {
            await notebookTab(pane, 'Comment');
            const comment = pane.locator('textarea[name="comment"]');
            await until(() => comment.isVisible(), 'the Comment tab');
            if (!(await comment.inputValue()).trim()) {
                await comment.fill('No acute findings.');
            }
            log(`  interpretation: ${await comment.inputValue()}`);
            const state = pane.locator('select[name="state"]');
            await until(async () => (await selected(state)) === 'Draft',
                'a result in Draft');
            await pane.getByRole('button', {name: 'Complete', exact: true})
                .click();
            const confirm = page.locator('.modal.in',
                {hasText: 'Once completed'});
            await until(() => confirm.isVisible(),
                'the confirmation of Complete');
            await shot('12-result-complete-confirm.png');
            await confirm.getByRole('button', {name: 'OK', exact: true})
                .click();
            await until(async () => (await selected(state)) === 'Done',
                'the result to be Done');
            await until(() => pane.getByRole('button',
                {name: 'Reset to Draft', exact: true}).isVisible(),
                'the Reset to Draft button');
            await shot('13-result-done.png');
        });

        await run('Dx Imaging Requests / Requested: the worklist entry of '
                + `${WORKLIST.patient}`, async () => {
            await openMenu('Health', 'Imaging', 'Dx Imaging Requests');
            await waitTab('Dx Imaging Requests');
            await showList();
            await pane.locator('.tab-domain a', {hasText: /^\s*Requested\b/})
                .click();
            const row = listRows().filter({hasText: WORKLIST.patient})
                .filter({hasText: WORKLIST.test});
            await until(async () => (await row.count()) === 1,
                `the requested ${WORKLIST.test} of ${WORKLIST.patient}`);
            await openRow(row.first());
            const accession = pane.locator(
                'input[name="accession_number"]');
            await until(() => accession.inputValue(),
                'the request form with its accession number');
            await notebookTab(pane, 'Worklist');
            const worklist = pane.locator('select[name="worklist_state"]');
            await until(() => worklist.isVisible(), 'the Worklist tab');
            await until(async () => (await selected(worklist))
                === 'Published', 'the worklist state Published');
            const entry = await pane.locator('input[name="worklist_entry"]')
                .inputValue();
            if (!entry.trim()) {
                throw new StepError('a published request without its '
                    + 'Worklist Entry');
            }
            log(`  accession ${await accession.inputValue()}, worklist `
                + `Published: ${entry}`);
            await shot('14-request-worklist.png');
        });

        await run('Health / Imaging / Orthanc / Studies to Review', async () => {
            // The list's search answered (an empty list shows no row)
            const searched = page.waitForResponse(response => (
                response.request().postData() || '').includes(
                '"model.gnuhealth.orthanc.study.search'), {timeout: 30000});
            searched.catch(() => {});  // awaited below
            await openMenu('Health', 'Imaging', 'Orthanc',
                'Studies to Review');
            await waitTab('Studies to Review');
            await searched;
            await until(() => pane.locator('.content-box table.tree').first()
                .isVisible(), 'the list');
            log(`  ${await listRows().count()} row(s)`);
            await shot('15-studies-to-review.png');
        });

        await run('Health / Imaging / Orthanc / Upload DICOM Files: Cancel',
                async () => {
            await openMenu('Health', 'Imaging', 'Orthanc',
                'Upload DICOM Files');
            const wizard = dialog;
            await until(async () => (await wizard.locator('.model-title')
                .innerText()) === 'Upload DICOM Files', 'the upload wizard');
            await until(async () => (await wizard.locator(
                'input[name="server"]').inputValue()) !== '',
                'the default server');
            await until(() => wizard.getByRole('button',
                {name: 'Upload', exact: true}).isVisible(),
                'the Upload button');
            await shot('16-upload-wizard.png');
            await wizard.getByRole('button', {name: 'Cancel', exact: true})
                .click();
            await until(async () => !(await page.locator('.modal.in')
                .count()), 'the wizard to close');
        });
        await reportingSteps({page, pane, toolbar, run, shot, openMenu,
            waitTab, activeTab, listRows, rowCells});
        await researchSteps({page, pane, toolbar, dialog, run, shot,
            openMenu, waitTab, listRows, openRow, complete, notebookTab,
            reloadForm});
        await pacsSteps({page, pane, dialog, run, shot, openMenu, waitTab,
            listRows, rowCells, complete, selected});
        await doseSteps({page, pane, toolbar, run, shot, openMenu, waitTab,
            activeTab, listRows, rowCells, openRow, notebookTab, showList,
            selected});
        checkErrors();
    } catch (error) {
        console.log(`\nFAILED at step: ${step}`);
        console.log(error instanceof StepError ? error.message
            : error.stack || String(error));
        if (errors.length && !(error instanceof StepError)) {
            console.log('errors in the browser:\n  ' + errors.join('\n  '));
        }
        try {
            await shot('failure.png');
        } catch (e) {
            console.log(`(no failure screenshot: ${e.message})`);
        }
        return 1;
    } finally {
        if (ignored.length) {
            log(`ignored ${ignored.length} known-harmless console `
                + `message(s):\n  ${[...new Set(ignored)].join('\n  ')}`);
        }
        await browser.close();
    }
    log(`passed: ${shots.length} screenshots in ${SHOTS}`);
    return 0;
}

// Issue #15: Health / Imaging / Reporting after the steps above (the demo's
// orders, the request placed, the result generated and the one completed
// by Dr House): each measure's list, its charts and a drill-down.
async function reportingSteps(t) {
    const {page, pane, toolbar, run, shot, openMenu, waitTab, activeTab,
        listRows, rowCells} = t;
    const table = pane.locator('.content-box table.tree').first();
    const chart = pane.locator('.graph:visible svg').first();

    // The rows of the list as objects keyed by column title
    async function rows() {
        const result = [];
        for (const row of await listRows().all()) {
            result.push(await rowCells(row));
        }
        return result;
    }

    // Open a measure from the menu and return its rows once the values of
    // the column are loaded
    async function openReporting(name, column) {
        await openMenu('Health', 'Imaging', 'Reporting', name);
        await waitTab(name);
        await until(async () => await table.isVisible()
            && (await listRows().count()) > 0
            && (await rows()).every(r => r[column]), `the ${name} list`,
            30000);
        return rows();
    }

    // The toolbar's Switch cycles through the views: to the next chart
    // (with its bars or lines drawn), or back to the list
    async function nextChart(what, marks = '.c3-bar') {
        await toolbar.getByRole('button', {name: 'Switch'}).click();
        await until(async () => await chart.isVisible()
            && (await chart.locator(marks).count()) > 0, what, 30000);
    }

    async function backToList() {
        for (let i = 0; i < 4 && !(await table.isVisible()); i++) {
            await toolbar.getByRole('button', {name: 'Switch'}).click();
            await page.waitForTimeout(500);
        }
        await until(() => table.isVisible(), 'the list view');
    }

    // Double-click the cell of a column that is not a link
    async function openCell(row, title) {
        const titles = (await table.locator('> thead > tr > th')
            .allInnerTexts()).map(text => text.trim());
        await row.locator('> td').nth(titles.indexOf(title)).dblclick();
    }

    function number(text) {
        return Number((text || '0').replace(/[^0-9.-]/g, '')) || 0;
    }

    await run('Reporting / Activity: the list per week and its charts',
            async () => {
        const weeks = await openReporting('Activity', 'Requests');
        const total = name => weeks.reduce((s, r) => s + number(r[name]), 0);
        log(`  ${weeks.length} weeks: ${total('Requests')} requests, `
            + `${total('Performed')} performed, ${total('Completed')} `
            + 'completed');
        // The demo's two requests and the one placed above; Ana Betz's
        // chest X-ray completed above
        if (total('Requests') < 3 || total('Completed') < 1) {
            throw new StepError('the activity misses the requests placed '
                + 'and the result completed above');
        }
        await shot('17-reporting-activity.png');
        await nextChart('the bar chart of the activity');
        await shot('18-reporting-activity-chart.png');
        await nextChart('the line chart of the activity', '.c3-line');
    });

    await run('Reporting / Turnaround: urgent and routine per modality, '
            + 'chart, open a modality', async () => {
        const lines = await openReporting('Turnaround', 'Completed');
        log('  ' + lines.map(r => `${r.Modality} ${r.Urgency}: completed `
            + `${r.Completed}, ordered to completed median `
            + `${r['Ordered to Completed, Median (h)']} h`).join('; '));
        await shot('19-reporting-turnaround.png');
        await nextChart('the chart of the turnaround');
        await shot('20-reporting-turnaround-chart.png');
        await nextChart('the chart of the steps');
        await backToList();
        const row = listRows().filter({hasText: 'Digital Radiography'})
            .first();
        await openCell(row, 'Urgency');
        await until(async () => (await activeTab()).startsWith(
            'Turnaround (Digital Radiography'), 'the DX turnaround per week');
        await until(async () => (await listRows().count()) > 0,
            'the weeks of the DX turnaround', 30000);
        // The modality of the row is the filter of the new tab
        await until(async () => (await pane.locator(
            'input[name="test_type"]').inputValue()).includes(
            'Digital Radiography'), 'the DX filter of the new tab');
        await nextChart('the chart of the DX turnaround per week',
            '.c3-line');
    });

    await run('Reporting / Backlog: to perform and to report, open the '
            + 'results to report', async () => {
        const lines = await openReporting('Backlog', 'Tests');
        log('  ' + lines.map(r => `${r.Stage} ${r.Modality} ${r.Age}: `
            + `${r.Tests}`).join('; '));
        if (!lines.some(r => r.Stage === 'To Perform')
                || !lines.some(r => r.Stage === 'To Report')) {
            throw new StepError('the backlog misses the requested test or '
                + 'the draft result of the steps above');
        }
        await shot('21-reporting-backlog.png');
        await nextChart('the chart of the tests to perform');
        await shot('22-reporting-backlog-chart.png');
        await nextChart('the chart of the tests to report');
        await backToList();
        const row = listRows().filter({hasText: 'To Report'})
            .filter({hasText: 'Magnetic Resonance'}).first();
        await openCell(row, 'Stage');
        await until(async () => (await activeTab()).startsWith(
            'Backlog: Results'), 'the results to report');
        await until(async () => (await listRows().filter(
            {hasText: 'Betz, Ana'}).filter({hasText: 'Brain MRI'}).count())
            === 1, 'the draft Brain MRI result of Ana Betz', 30000);
        await shot('23-reporting-backlog-results.png');
    });

    await run('Reporting / Readers: Dr House\'s completed result, chart',
            async () => {
        const lines = await openReporting('Readers', 'Completed');
        log('  ' + lines.map(r => `${r['Health Professional']}: `
            + `${r.Completed}`).join('; '));
        if (!lines.some(r => r['Health Professional'].includes('House'))) {
            throw new StepError('Dr House is not among the readers');
        }
        await nextChart('the chart of the readers');
        await shot('24-reporting-readers-chart.png');
    });
}

// Issue #13: enrol Ana Betz in the demo's research project, Copy to
// Project from her subject, and the copies done in the project's Copy Log
async function researchSteps(t) {
    const {page, pane, toolbar, dialog, run, shot, openMenu, waitTab,
        listRows, openRow, complete, notebookTab, reloadForm} = t;
    const PROJECT = 'Lung nodules follow-up';
    let queued = 0;

    await run('Health / Imaging / Research / Subjects: enrol '
            + `${PATIENT} in ${PROJECT}`, async () => {
        await openMenu('Health', 'Imaging', 'Research', 'Subjects');
        await waitTab('Subjects');
        await toolbar.getByRole('button', {name: 'New', exact: true})
            .click();
        const project = pane.locator('input[name="project"]');
        await until(() => project.isVisible(), 'the subject form');
        await complete(project, 'LUNG', PROJECT);
        await complete(pane.locator('input[name="patient"]'),
            PATIENT_SEARCH, PATIENT);
        await pane.locator('input[name="consent_reference"]')
            .fill('LUNG-CONSENT-001');
        await toolbar.getByRole('button', {name: 'Save', exact: true})
            .click();
        await until(() => pane.locator('.infobar .alert-info',
            {hasText: 'Record saved.'}).isVisible(), 'Record saved.');
        const pseudonym = pane.locator('input[name="pseudonym"]');
        await until(async () => (await pseudonym.inputValue())
            .startsWith('LUNG-'), 'the pseudonym drawn');
        log(`  ${PATIENT} is ${await pseudonym.inputValue()}`);
        await shot('25-research-subject.png');
    });

    await run('the subject\'s Copy to Project: her studies, Copy',
            async () => {
        await pane.getByRole('button', {name: 'Copy to Project',
            exact: true}).click();
        // Titled with the subject's pseudonym
        await until(async () => (await dialog.locator('.model-title')
            .innerText()).startsWith('Copy to Project'),
            'the Copy to Project wizard');
        await until(async () => (await dialog.locator(
            'input[name="project"]').inputValue()).includes(PROJECT),
            'the project of the subject');
        const studies = dialog.locator('div.form-many2many')
            .locator('tbody tr');
        await until(async () => (await studies.count()) > 0,
            'the studies of the patient');
        queued = await studies.count();
        await shot('26-research-copy-wizard.png');
        await dialog.getByRole('button', {name: 'Copy', exact: true})
            .click();
        const message = dialog.locator('textarea[name="message"]');
        await until(async () => (await message.inputValue())
            .includes('queued'), 'the copies queued');
        log(`  ${(await message.inputValue()).split('\n')[0]}`);
        await shot('27-research-copy-queued.png');
        await dialog.getByRole('button', {name: 'Close', exact: true})
            .click();
        await until(async () => !(await page.locator('.modal.in')
            .count()), 'the wizard to close');
    });

    await run(`Research / Projects: ${PROJECT}, its Copy Log done`,
            async () => {
        await openMenu('Health', 'Imaging', 'Research', 'Projects');
        await waitTab('Projects');
        const row = listRows().filter({hasText: PROJECT});
        await until(() => row.count(), `the project ${PROJECT}`);
        await openRow(row.first());
        await notebookTab(pane, 'Copy Log');
        const log_ = pane.locator('.form-notebook .tab-pane.active')
            .locator('tbody tr');
        // The copies run after the wizard's call, in the background
        await until(async () => {
            const done = await log_.filter({hasText: 'Done'}).count();
            if (done < queued) {
                await reloadForm();
                await notebookTab(pane, 'Copy Log');
            }
            return done === queued;
        }, `the ${queued} copies done`, 60000);
        const cells = (await log_.first().locator('> td').allInnerTexts())
            .map(text => text.trim()).filter(text => text);
        log(`  copy: ${cells.join(' | ')}`);
        await shot('28-research-copy-log.png');
    });
}

// Issue #12: the priors of Ana Betz on the hospital PACS (the demo's
// second Orthanc, the DICOM node HOSPITAL-PACS): Query PACS -> Retrieve ->
// the retrieval done -> the priors among the studies; the DICOM Nodes list
async function pacsSteps(t) {
    const {page, pane, dialog, run, shot, openMenu, waitTab, listRows,
        rowCells, complete, selected} = t;
    const NODE = 'HOSPITAL-PACS';
    const PRIORS = ['Chest CT prior', 'Brain MRI prior',
        'Abdominal ultrasound prior'];

    await run('Health / Imaging / Orthanc / Query PACS: the node answers, '
            + `the priors of ${PATIENT}`, async () => {
        await openMenu('Health', 'Imaging', 'Orthanc', 'Query PACS');
        await until(async () => (await dialog.locator('.model-title')
            .innerText()) === 'Query PACS', 'the Query PACS wizard');
        const status = dialog.locator('div.form-one2many tbody tr',
            {hasText: NODE});
        await until(async () => (await status.count()) === 1
            && (await status.innerText()).includes('OK'),
            `the status OK of ${NODE}`);
        await complete(dialog.locator('input[name="patient"]'),
            PATIENT_SEARCH, PATIENT);
        await until(async () => (await dialog.locator(
            'input[name="patient_ids"]').inputValue()) === 'PUID-1001',
            'the PatientIDs of the patient');
        await shot('29-query-pacs.png');
        await dialog.getByRole('button', {name: 'Query', exact: true})
            .click();
        const rows = dialog.locator('div.form-one2many tbody tr',
            {hasText: 'PUID-1001'});
        await until(async () => (await rows.count()) === PRIORS.length,
            `${PRIORS.length} studies of PUID-1001`, 30000);
        for (const prior of PRIORS) {
            await until(() => rows.filter({hasText: prior}).count(),
                `the answer ${prior}`);
        }
        log(`  ${await dialog.locator('textarea[name="notes"]')
            .inputValue()}`);
        await shot('30-query-pacs-answers.png');
    });

    await run('Retrieve: the retrieval is done', async () => {
        await dialog.getByRole('button', {name: 'Retrieve', exact: true})
            .click();
        await waitTab('Retrievals');
        const state = pane.locator('select[name="state"]');
        await until(async () => (await selected(state)) === 'Done',
            'the retrieval Done', 60000);
        const studies = pane.locator('div.form-one2many tbody tr',
            {hasText: 'Retrieved'});
        await until(async () => (await studies.count()) === PRIORS.length,
            `${PRIORS.length} studies retrieved`);
        await shot('31-retrieval.png');
    });

    await run('Health / Imaging / Orthanc / Studies: the priors, linked',
            async () => {
        await openMenu('Health', 'Imaging', 'Orthanc', 'Studies');
        await waitTab('Studies');
        for (const prior of PRIORS) {
            const row = listRows().filter({hasText: prior});
            await until(() => row.count(), `the study ${prior}`, 30000);
            const cells = await rowCells(row.first());
            if (cells.Patient !== PATIENT) {
                throw new StepError(`${prior} is linked to `
                    + `"${cells.Patient}", not ${PATIENT}`);
            }
        }
        await shot('32-retrieved-studies.png');
    });

    await run('Health / Configuration / Orthanc / DICOM Nodes', async () => {
        await openMenu('Health', 'Configuration', 'Orthanc', 'DICOM Nodes');
        await waitTab('DICOM Nodes');
        const row = listRows().filter({hasText: NODE});
        await until(() => row.count(), `the node ${NODE}`);
        const cells = await rowCells(row.first());
        log(`  ${NODE}: ${cells['AE Title']} ${cells.Host}:${cells.Port} `
            + `${cells.Status}`);
        await shot('33-dicom-nodes.png');
    });
}

// Issue #14: the report of the result completed above, stored in its
// study; the demo's head CT of Ana Betz (demo/data.py: its scanner's dose
// report, above the test's reference levels) on its result, on the
// patient's Radiation Dose tab and history, and among the doses above
// reference of the medical physicist.
async function doseSteps(t) {
    const {page, pane, toolbar, run, shot, openMenu, waitTab, activeTab,
        listRows, rowCells, openRow, notebookTab, showList, selected} = t;
    const tabPane = pane.locator('.form-notebook .tab-pane.active');
    const HEAD_CT = 'Head CT without contrast';

    // Open a result of the patient from Dx Imaging - Results
    async function openResult(domain, test) {
        await openMenu('Health', 'Imaging', 'Dx Imaging - Results');
        await waitTab('Dx Imaging - Results');
        await showList();
        await pane.locator('.tab-domain a',
            {hasText: new RegExp(`^\\s*${domain}\\b`)}).click();
        const row = listRows().filter({hasText: PATIENT})
            .filter({hasText: test});
        await until(async () => (await row.count()) === 1,
            `the ${domain} result of ${PATIENT} for ${test}`);
        await openRow(row.first());
        await until(async () => (await pane.locator(
            'input[name="patient"]').inputValue()) === PATIENT,
            'the result form');
    }

    await run(`the completed ${DX_RESULT.test}: its report stored in the `
            + 'study', async () => {
        await openResult('Done', DX_RESULT.test);
        await notebookTab(pane, 'Studies');
        const state = pane.locator('select[name="study_report_state"]');
        await until(async () => (await selected(state)) === 'Stored',
            'the report Stored in the studies', 30000);
        const report = tabPane.locator('div.form-one2many')
            .locator('tbody tr', {hasText: DX_RESULT.study});
        await until(() => report.count(), 'the report of the study');
        log(`  report in study: ${(await report.first().innerText())
            .replace(/\s+/g, ' ').trim()}`);
        await shot('34-result-report-in-study.png');
    });

    await run(`the ${HEAD_CT} of ${PATIENT}: Dose tab, above the reference `
            + 'level', async () => {
        await openResult('Draft', HEAD_CT);
        await notebookTab(pane, 'Radiation Dose');
        const dose = tabPane.locator('tbody tr', {hasText: HEAD_CT});
        await until(() => dose.count(), `the dose of the ${HEAD_CT}`);
        const text = (await dose.first().innerText()).replace(/\s+/g, ' ');
        if (!text.includes('910.50') || !text.includes('52.30')) {
            throw new StepError(`the dose row lacks the DLP 910.50 and the `
                + `CTDIvol 52.30: ${text}`);
        }
        const flag = tabPane.locator('input[name="dose_above_reference"]');
        await until(() => flag.isChecked(), 'the above reference flag');
        log(`  dose: ${text.trim()}`);
        await shot('35-result-dose.png');
    });

    await run(`Health / Patients: ${PATIENT}'s Radiation Dose tab and `
            + 'history, its graph', async () => {
        await openMenu('Health', 'Patients');
        await waitTab('Patients');
        const row = listRows().filter({hasText: PATIENT_SEARCH});
        await until(() => row.count(), `the patient ${PATIENT}`);
        await openRow(row.first());
        await notebookTab(pane, 'Radiation Dose');
        // A float shows a text input and a number input
        const total = tabPane.locator('input[name="dose_dlp_total"]').first();
        await until(async () => (await total.inputValue()).includes(
            '910.5'), 'the DLP of all the studies');
        await shot('36-patient-dose.png');
        await tabPane.getByRole('button',
            {name: 'Radiation Dose History', exact: true}).click();
        // The tab of a button's action is named after the record too
        await until(async () => (await activeTab()).startsWith(
            'Radiation Dose History'), 'the Radiation Dose History tab');
        await until(async () => (await listRows().filter(
            {hasText: HEAD_CT}).count()) === 1, 'the head CT in the history',
            30000);
        await shot('37-patient-dose-history.png');
        await toolbar.getByRole('button', {name: 'Switch'}).click();
        const chart = pane.locator('.graph:visible svg').first();
        await until(async () => await chart.isVisible()
            && (await chart.locator('.c3-line').count()) > 0,
            'the graph of the cumulative dose', 30000);
        await shot('38-patient-dose-graph.png');
    });

    await run('Health / Imaging / Radiation Dose / Doses above Reference',
            async () => {
        await openMenu('Health', 'Imaging', 'Radiation Dose',
            'Doses above Reference');
        await waitTab('Doses above Reference');
        const row = listRows().filter({hasText: HEAD_CT});
        await until(() => row.count(), `the ${HEAD_CT} above reference`,
            30000);
        const cells = await rowCells(row.first());
        log(`  above reference: ${cells['Above Reference']}`);
        await shot('39-doses-above-reference.png');
    });
}

const watchdog = setTimeout(() => {
    console.log(`FAILED: the run took more than ${TIMEOUT / 1000}s `
        + `(at step: ${step})`);
    process.exit(1);
}, TIMEOUT);
main().then(code => {
    clearTimeout(watchdog);
    process.exit(code);
}, error => {
    clearTimeout(watchdog);
    console.log(`FAILED: ${error.stack || error}`);
    process.exit(1);
});
