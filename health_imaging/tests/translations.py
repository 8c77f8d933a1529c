# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The translations of the imaging modules, with Tryton's own tooling.

The template of a module is what Tryton's "Export Translations" gives for
the internal language ('en') once "Set Translations" has read the views and
the report: every string Tryton translates (models, fields, help,
selections, views, buttons, messages, menus, groups, report texts).

- ``update_po_files`` writes ``<module>/locale/<lang>.po`` for every
  language GNU Health's ``health`` module ships: it loads the existing
  files, runs "Set Translations" and "Update Translations" (which offers
  GNU Health's translation of the same English text as a fuzzy suggestion
  for a new string), exports each language and keeps the template's
  entries only (an obsolete entry is dropped, a new one added untranslated).
- ``missing`` lists the entries of a template that a language leaves
  untranslated (empty or fuzzy, in the language and in its parent); the
  modules' tests fail on it for the ``COMPLETE`` languages.

Run it with ``bin/translations`` (see the developers' notes in doc/).
"""
import argparse
import re
import sys
from pathlib import Path

import polib
from trytond.tests.test_tryton import with_transaction

MODULES = ['health_imaging', 'health_orthanc']
# Every string of these is translated; the tests check it
COMPLETE = ['es', 'fr', 'de', 'pt_BR', 'it_IT', 'zh_CN', 'ar']
# Languages that Tryton 7.0 does not create: names and writing direction
# for the database that exports them
EXTRA_LANGUAGES = {
    'ar': ("العربية", 'rtl'),
    'el': ("Ελληνικά", 'ltr'),
    'eo': ("Esperanto", 'ltr'),
    'it_IT': ("Italiano (Italia)", 'ltr'),
    'ja_JP': ("日本語", 'ltr'),
    'ka': ("ქართული", 'ltr'),
    'pt_BR': ("Português (Brasil)", 'ltr'),
    'sv': ("Svenska", 'ltr'),
    'vi': ("Tiếng Việt", 'ltr'),
    }


def module_dir(module):
    from trytond.modules import get_module_info
    return Path(get_module_info(module)['directory'])


def gnuhealth_languages():
    "The languages GNU Health's core module ships"
    locale = module_dir('health') / 'locale'
    return sorted(p.stem for p in locale.glob('*.po'))


def po_path(module, lang):
    return module_dir(module) / 'locale' / ('%s.po' % lang)


def read_po(module, lang):
    path = po_path(module, lang)
    return polib.pofile(str(path)) if path.exists() else None


def key(entry):
    return entry.msgctxt, entry.msgid


def parent_language(lang):
    "Tryton's fall-back language: pt_BR falls back to pt"
    return lang.rsplit('_', 1)[0] if '_' in lang else None


def translated(po):
    "The keys that a PO file translates (fuzzy entries are not used)"
    if po is None:
        return set()
    return {key(e) for e in po
        if e.msgstr and not e.obsolete and 'fuzzy' not in e.flags}


def missing(template, module, lang):
    "The template's entries that neither lang nor its parent translates"
    done = translated(read_po(module, lang))
    parent = parent_language(lang)
    if parent:
        done |= translated(read_po(module, parent))
    return [e for e in template if key(e) not in done]


PLACEHOLDER = re.compile(r'%\([a-z_]+\)[sd]')


def placeholders_differ(po):
    "The translated entries whose %(name)s placeholders are not the msgid's"
    return [e for e in po if e.msgstr and sorted(PLACEHOLDER.findall(
                e.msgid)) != sorted(PLACEHOLDER.findall(e.msgstr))]


def set_translations(modules):
    """Run "Set Translations" on the modules' views and reports: it puts
    their strings in ir.translation (the other strings are there from the
    modules' activation)"""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool()
    Set = pool.get('ir.translation.set', type='wizard')
    for model in ['ir.ui.view', 'ir.action.report']:
        Model = pool.get(model)
        records = Model.search([('module', 'in', modules)])
        if not records:
            continue
        with Transaction().set_context(
                active_model=model, active_id=records[0].id,
                active_ids=[r.id for r in records]):
            session_id, _, _ = Set.create()
            Set.execute(session_id, {}, 'set_')
            Set.delete(session_id)


def export(module, lang):
    "Tryton's Export Translations of module in lang, as a PO file"
    from trytond.pool import Pool
    Translation = Pool().get('ir.translation')
    content = Translation.translation_export(lang, module)
    return polib.pofile(content.decode('utf-8') if content else '')


def template(module):
    "The strings of module, in a transaction where set_translations ran"
    return export(module, 'en')


def load_languages(languages):
    """Make the languages translatable, as "Load Translations" does: it
    reads the locale/<lang>.po of every activated module, GNU Health's too
    (they give the suggestions of "Update Translations")"""
    from trytond.pool import Pool
    Lang = Pool().get('ir.lang')
    existing = {l.code: l for l in Lang.search([('code', 'in', languages)])}
    new = [{'code': code, 'name': EXTRA_LANGUAGES.get(code, (code,))[0],
            'direction': EXTRA_LANGUAGES.get(code, (None, 'ltr'))[1]}
        for code in languages if code not in existing]
    records = list(existing.values()) + Lang.create(new)
    Lang.load_translations(records)
    return records


def update_translations(lang):
    "Run Tryton's Update Translations for lang"
    from trytond.pool import Pool
    pool = Pool()
    Update = pool.get('ir.translation.update', type='wizard')
    session_id, _, _ = Update.create()
    Update.execute(session_id, {'start': {'language': lang.id}}, 'update')
    Update.delete(session_id)


def merge(template, exported):
    """The template with the exported translations: obsolete entries are
    dropped, new ones are untranslated"""
    from trytond.ir.translation import TrytonPOFile
    translations = {key(e): e for e in exported if not e.obsolete}
    po = TrytonPOFile(wrapwidth=78)
    po.metadata = {'Content-Type': 'text/plain; charset=utf-8'}
    for entry in template:
        done = translations.get(key(entry))
        po.append(polib.POEntry(
                msgctxt=entry.msgctxt, msgid=entry.msgid,
                msgstr=done.msgstr if done else '',
                flags=list(done.flags) if done and done.msgstr else []))
    po.sort()
    return po


def keep_translations(po, previous, parent):
    """Restore the translations of unchanged entries (same context and
    English text) that Update Translations emptied or replaced by a fuzzy
    suggestion because the parent language (pt for pt_BR) has the same
    text, unless the parent's translation is a usable one: Tryton does
    not use a fuzzy one, the user would see English"""
    previous = {key(e): e for e in previous or []
        if e.msgstr and 'fuzzy' not in e.flags}
    usable = translated(parent)
    for entry in po:
        old = previous.get(key(entry))
        if (old and (not entry.msgstr or 'fuzzy' in entry.flags)
                and key(entry) not in usable):
            entry.msgstr = old.msgstr
            if 'fuzzy' in entry.flags:
                entry.flags.remove('fuzzy')
    return po


def update_po_files(modules, languages):
    """Write <module>/locale/<lang>.po for the languages, in a database
    where the modules are activated (rolled back)"""
    from trytond.pool import Pool
    from trytond.tests.test_tryton import DB_NAME
    from trytond.transaction import Transaction
    written = []
    previous = {(m, l): read_po(m, l) for m in modules for l in languages}
    with Transaction().start(DB_NAME, 0, context={}) as transaction:
        set_translations(modules)
        templates = {m: template(m) for m in modules}
        Lang = Pool().get('ir.lang')
        load_languages(languages)
        for code in languages:
            lang, = Lang.search([('code', '=', code)])
            update_translations(lang)
            for module in modules:
                po = merge(templates[module], export(module, code))
                parent = parent_language(code)
                keep_translations(po, previous[module, code],
                    read_po(module, parent) if parent else None)
                path = po_path(module, code)
                path.parent.mkdir(exist_ok=True)
                po.save(str(path))
                written.append(path)
        transaction.rollback()
    return templates, written


def coverage_rows(templates, languages):
    "(lang, module, translated, total) for each language and module"
    for lang in languages:
        for module, pot in templates.items():
            left = missing(pot, module, lang)
            yield lang, module, len(pot) - len(left), len(pot)


def print_coverage(templates, languages, out=sys.stdout):
    modules = list(templates)
    out.write('| language | %s |\n' % ' | '.join(modules))
    out.write('|---|%s\n' % ('---|' * len(modules)))
    by_lang = {}
    for lang, module, done, total in coverage_rows(templates, languages):
        by_lang.setdefault(lang, []).append(
            '%d / %d (%d %%)' % (done, total, 100 * done // (total or 1)))
    for lang in languages:
        flag = ' (complete)' if lang in COMPLETE else ''
        out.write('| %s%s | %s |\n' % (lang, flag, ' | '.join(by_lang[lang])))


class TranslationTestMixin:
    "The module's strings are translated in the COMPLETE languages"

    @with_transaction()
    def test_translations_complete(self):
        "Every string of the module is translated in the complete languages"
        set_translations([self.module])
        pot = template(self.module)
        self.assertTrue(any(e.msgctxt.startswith('view:') for e in pot))
        for lang in COMPLETE:
            with self.subTest(lang=lang):
                left = missing(pot, self.module, lang)
                self.assertFalse(left, (
                        "%s/locale/%s.po leaves %d strings untranslated or "
                        "fuzzy (bin/translations update adds new strings, "
                        "then translate them):\n%s") % (
                        self.module, lang, len(left), '\n'.join(
                            '%s %r' % key(e) for e in left)))

    def test_translations_placeholders(self):
        "Translations keep the %(name)s placeholders of the English text"
        for lang in gnuhealth_languages():
            po = read_po(self.module, lang)
            with self.subTest(lang=lang):
                wrong = placeholders_differ(po) if po else []
                self.assertFalse(wrong, '%s/locale/%s.po:\n%s' % (
                        self.module, lang, '\n'.join(
                            '%r -> %r' % (e.msgid, e.msgstr) for e in wrong)))


def activate():
    "A database with the modules (DB_NAME, DB_CACHE as for the tests)"
    from trytond.tests.test_tryton import activate_module
    activate_module(MODULES)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Update the modules' locale/*.po with Tryton's "
        "Set, Update and Export Translations, or print their coverage")
    parser.add_argument('command', choices=['update', 'coverage', 'missing'])
    parser.add_argument('languages', nargs='*',
        help="language codes (default: GNU Health's languages)")
    args = parser.parse_args(argv)
    activate()
    from trytond.tests.test_tryton import DB_NAME
    from trytond.transaction import Transaction
    languages = args.languages or gnuhealth_languages()
    if args.command == 'update':
        templates, written = update_po_files(MODULES, languages)
        for path in written:
            print('wrote %s' % path)
    else:
        with Transaction().start(DB_NAME, 0, context={}) as transaction:
            set_translations(MODULES)
            templates = {m: template(m) for m in MODULES}
            transaction.rollback()
    if args.command == 'missing':
        for module, pot in templates.items():
            for lang in languages:
                for entry in missing(pot, module, lang):
                    print('%s\t%s\t%s\t%s' % (
                            module, lang, entry.msgctxt, entry.msgid))
    else:
        print_coverage(templates, languages)


if __name__ == '__main__':
    main()
