# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Access rules held on the server, where Tryton 7.0 leaves a path open.

- Tryton checks read access to the fields a client names in a domain, but
  not inside a nested ``where``: ``('server', 'where', [('password', ...)])``
  answers yes or no on a field the user may not read.
- Tryton checks the field access of a read by the names asked for: a
  dotted name (``patient.rec_name``) names no field, so the field it
  starts with is read whatever its access.
- A field read-only in every view is still written by a client that sends
  it: views do not stop RPC calls.
"""
import copy
from collections import defaultdict
from functools import wraps

from trytond.i18n import gettext
from trytond.model.exceptions import AccessError
from trytond.model.modelstorage import is_leaf
from trytond.pool import Pool
from trytond.transaction import Transaction

WHERE_OPERATORS = {'where', 'not where'}


def _collect(Model, domain, to_check):
    "Add to to_check {model name: field names} what domain reaches"
    if not domain:
        return
    if is_leaf(domain):
        name, operator, value = domain[:3]
        local, _, relate = name.partition('.')
        field = Model._fields.get(local)
        if field is None:
            # A Function field's searcher may hand the clause to another
            # model than its target, where the name exists unchecked
            raise AccessError(gettext('ir.msg_access_rule_field_error',
                    model=Model.__names__()['model'], field=local))
        to_check[Model.__name__].add(local)
        target = None
        if field._type == 'reference':
            if len(domain) >= 4 and isinstance(domain[3], str):
                target = Pool().get(domain[3])
        elif hasattr(field, 'get_target'):
            target = field.get_target()
        if target is None:
            return
        if relate:
            _collect(target, [(relate,) + tuple(domain[1:])], to_check)
        elif operator in WHERE_OPERATORS:
            to_check[target.__name__]
            _collect(target, value, to_check)
        return
    for clause in domain[1:] if domain[0] in ('AND', 'OR') else domain:
        _collect(Model, clause, to_check)


def check_domain_access(Model, domain):
    """Check that the user may read every model and field that domain
    reaches, through dotted names and nested where domains alike"""
    pool = Pool()
    ModelAccess = pool.get('ir.model.access')
    FieldAccess = pool.get('ir.model.field.access')
    to_check = defaultdict(set)
    _collect(Model, domain, to_check)
    for name, field_names in to_check.items():
        ModelAccess.check(name, 'read')
        FieldAccess.check(name, field_names, 'read')


def check_field_search(Model, name):
    """Refuse a domain on the field name of Model to a user who may not
    read it, wherever the domain is nested: a domain_<name> method of the
    model calls it, as Tryton converts nested domains without checking"""
    pool = Pool()
    FieldAccess = pool.get('ir.model.field.access')
    transaction = Transaction()
    if transaction.user == 0:
        return
    with transaction.set_context(_check_access=True):
        FieldAccess.check(Model.__name__, [name], 'read')


class DomainAccessMixin:
    """Check the access to what a search reaches, nested where included,
    and to the first field of the dotted names a read asks for"""
    __slots__ = ()

    @classmethod
    def search(cls, domain, *args, **kwargs):
        transaction = Transaction()
        if transaction.user and transaction.check_access:
            check_domain_access(cls, domain)
        return super().search(domain, *args, **kwargs)

    @classmethod
    def read(cls, ids, fields_names):
        transaction = Transaction()
        if transaction.user and transaction.check_access:
            # Tryton checks 'patient.rec_name' as a field of that name,
            # which no access names: the patient is read
            FieldAccess = Pool().get('ir.model.field.access')
            FieldAccess.check(cls.__name__, {
                    n.split('.', 1)[0] for n in fields_names if '.' in n},
                'read')
        return super().read(ids, fields_names)


def _meaningful(value):
    "Tell whether a value given for a field sets anything"
    return value not in (None, False, '', [], ())


def _checking_client_values(method):
    """Return the RPC decorator of method that refuses the read-only
    fields among the values a client gives to it"""
    def decorator(func):
        @wraps(func)
        def wrapper(*args, **kwargs):
            Model = func.__self__
            if method == 'create':
                vlist, creating = args[0], True
            elif method == 'write':
                vlist, creating = args[1::2], False
            elif method == 'copy':
                default = args[1] if len(args) > 1 else kwargs.get('default')
                vlist, creating = [default or {}], True
            else:  # import_data(fields_names, data)
                names = {n.split('/')[0].split(':')[0] for n in args[0]}
                vlist, creating = [dict.fromkeys(names, True)], True
            Model._refuse_readonly(vlist, creating=creating)
            return func(*args, **kwargs)
        return wrapper
    return decorator


class ReadonlyFieldsMixin:
    """Refuse the values a client sends for the fields that are read-only
    in every view (static ``readonly``): what the server computes is never
    taken from a client.

    The check decorates the create, write, copy and import_data that the
    RPC dispatcher calls, so server code writes these fields freely.
    """
    __slots__ = ()

    @classmethod
    def __setup__(cls):
        super().__setup__()
        for name in ['create', 'write', 'copy', 'import_data']:
            rpc = copy.copy(cls.__rpc__[name])
            check = _checking_client_values(name)
            if rpc.decorator:
                rpc.decorator = (
                    lambda f, d=rpc.decorator, c=check: c(d(f)))
            else:
                rpc.decorator = check
            cls.__rpc__[name] = rpc

    @classmethod
    def _readonly_given(cls, values, creating=False):
        return sorted(name for name, value in values.items()
            if name in cls._fields and cls._fields[name].readonly
            and (not creating or _meaningful(value)))

    @classmethod
    def _refuse_readonly(cls, vlist, creating=False):
        for values in vlist:
            names = cls._readonly_given(values, creating=creating)
            if names:
                raise AccessError(gettext(
                        'health_imaging.msg_readonly_fields',
                        model=cls.__names__()['model'],
                        fields=', '.join('"%s"' % cls.__names__(n)['field']
                            for n in names)))


def server_queue():
    """The context in which to queue a task for a client's call: the
    client's context is copied into the task, and Tryton takes the queue,
    the delay and the batch from it; none of them is the client's choice"""
    return Transaction().set_context(queue_name='default',
        queue_scheduled_at=None, queue_expected_at=None, queue_batch=None)
