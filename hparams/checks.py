"""Range checks for spec fields: each a (test, what is allowed) pair, or
the tests they are made of. A test that raises TypeError fails."""
import re


def positive(v):
  return v > 0


def non_negative(v):
  return v >= 0


def below_one(v):
  return 0 <= v < 1


def optional(test):
  return lambda v: v is None or test(v)


def whole(test):
  return lambda v: isinstance(v, int) and not isinstance(v, bool) and test(v)


def regex(v):
  try:
    re.compile(v)
  except re.error:
    return False
  return True


GT0, GE0, UNIT = (positive, '> 0'), (non_negative, '>= 0'), (
    below_one, 'in [0, 1)')
COUNT = (whole(lambda v: v >= 1), 'an integer >= 1')
# What tf.random and numpy take as a seed.
SEED = (optional(whole(lambda v: 0 <= v < 2**32)),
        'an integer in [0, 2**32) or None')
REGEX = (regex, 'a regular expression')
# A growth share at which the weight decay never turns negative.
GROWTH = ((lambda v: v >= -1), '>= -1')
