# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.


def search_in(clause, names):
    """Return the domain that searches a rec_name clause in several fields.

    A negative operator ("not ilike") must hold for every field, a positive
    one for any.
    """
    _, operator, *_ = clause
    bool_op = 'AND' if operator.startswith('!') or operator.startswith(
        'not ') else 'OR'
    return [bool_op] + [(name,) + tuple(clause[1:]) for name in names]
