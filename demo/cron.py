# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The demo's scheduler on SQLite: trytond-cron, one transaction per job.

trytond-cron 7.0 runs every due job inside one transaction that also saves
the next call of the jobs already run; on SQLite that transaction holds the
write lock, so a job that writes after another one waits and fails.  This
loop runs each due job in a transaction of its own.  On PostgreSQL the demo
runs trytond-cron itself.
"""
import datetime
import logging
import sys
import time

from trytond.config import config

# Before any other trytond import: some read the configuration on import
config.update_etc()

from trytond.pool import Pool  # noqa: E402
from trytond.transaction import Transaction  # noqa: E402
from trytond.worker import run_task  # noqa: E402

logger = logging.getLogger('demo.cron')


def due_jobs(database):
    with Transaction().start(database, 0, readonly=True):
        Cron = Pool().get('ir.cron')
        return [c.id for c in Cron.search(['OR',
                    ('next_call', '<=', datetime.datetime.now()),
                    ('next_call', '=', None),
                    ])]


def run_job(database, cron_id):
    now = datetime.datetime.now()
    with Transaction().start(database, 0,
            context={'_skip_warnings': True}) as transaction:
        Cron = Pool().get('ir.cron')
        cron = Cron(cron_id)
        started = time.monotonic()
        try:
            cron.run_once()
        except Exception:
            logger.exception("%s failed", cron.method)
            transaction.rollback()
            cron = Cron(cron_id)
        else:
            logger.info("%s in %.0f ms", cron.method,
                (time.monotonic() - started) * 1000)
        cron.next_call = cron.compute_next_call(now)
        cron.save()
        transaction.commit()
        tasks = list(transaction.tasks)
        transaction.tasks.clear()
    for task_id in tasks:
        run_task(database, task_id)


def main(database, interval=30):
    Pool.start()
    Pool(database).init()
    logging.basicConfig(level=logging.INFO,
        format='%(asctime)s %(levelname)s %(name)s %(message)s')
    while True:
        for cron_id in due_jobs(database):
            run_job(database, cron_id)
        time.sleep(interval)


if __name__ == '__main__':
    main(sys.argv[1])
