"""Denoisers named by text specs, for the command line and for saved configurations.

A spec is NAME or NAME:PARAM=VALUE,PARAM=VALUE,...; a list value is '/'-separated:
    rademacher,  bernoulli-gauss:rho=0.3,  sign:noise_var=0.1,
    gauss-mixture:weights=0.5/0.5,means=-1/1,vars=0.1/0.1
NAME is the class name in kebab case (BernoulliGauss -> bernoulli-gauss). Every Bayes prior and
channel that `denoisers` exports with k = L = 1 is available (a class that implements its whole
protocol, `PROTOCOL`: ERM penalties and losses, which draw no teacher and have no log Z, are not),
with the parameters of its constructor, so a new denoiser class needs no registration.
`parse` returns the denoiser and its canonical spec (every parameter written out, defaults
included, floats by repr): two specs of the same denoiser compare equal as strings, which is what
a saved configuration records.
"""
import inspect
import re

import denoisers
from denoisers.base import InputDenoiser, OutputDenoiser

#: the two kinds of denoiser, by the word the command line uses
KINDS = {"prior": InputDenoiser, "channel": OutputDenoiser}
#: the methods a Bayes denoiser of each kind implements (teacher, iteration, SE and free entropy)
PROTOCOL = {"prior": ("f_in", "log_z_in", "sample", "second_moment", "mean"),
            "channel": ("g_out", "log_z_out", "sample")}
#: helper base classes that implement the protocol on top of methods left to their subclasses
_ABSTRACT = {"ScalarChannel"}


def _kebab(name):
    """BernoulliGauss -> bernoulli-gauss, ReLU -> relu, GaussMixture -> gauss-mixture."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).lower()


def available(kind):
    """{spec name: class} of the exported Bayes denoisers of `kind` ('prior' or 'channel') with k = L = 1."""
    base = KINDS[_check_kind(kind)]
    found = {}
    for name in denoisers.__all__:
        cls = getattr(denoisers, name)
        if (name not in _ABSTRACT and inspect.isclass(cls) and issubclass(cls, base) and cls is not base
                and all(getattr(cls, m) is not getattr(base, m) for m in PROTOCOL[kind])
                and cls.k == 1 and getattr(cls, "tokens", 1) == 1 and _scalar_constructor(cls)):
            found[_kebab(name)] = cls
    return found


def _scalar_constructor(cls):
    """The constructor builds a k = L = 1 denoiser by default: every structural parameter (k, tokens)
    defaults to 1 and every other one to a number, a list of numbers, None or nothing (required)."""
    def numeric(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    for p in inspect.signature(cls).parameters.values():
        if p.name in _STRUCTURAL:
            if p.default != 1:
                return False
        elif not (p.default is inspect.Parameter.empty or p.default is None or numeric(p.default)
                  or (isinstance(p.default, (list, tuple)) and all(map(numeric, p.default)))):
            return False
    return True


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be 'prior' or 'channel', got {kind!r}")
    return kind


#: constructor parameters a spec does not set: the shape (specs name k = L = 1 denoisers only)
_STRUCTURAL = {"k", "tokens"}


def _parameters(cls):
    """The constructor's numeric parameters: [(name, default or inspect.Parameter.empty)].

    Left out: the shape parameters (`_STRUCTURAL`) and those defaulting to None (options such as
    a k x k covariance that a spec of a k = 1 denoiser cannot hold).
    """
    return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _STRUCTURAL
            and p.default is not None]


def _format(value):
    if isinstance(value, (list, tuple)):
        return "/".join(repr(float(v)) for v in value)
    return repr(float(value))


def _number(text, name, param):
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"parameter {param} of {name} must be a number, got {text!r}") from None


def parse(spec, kind):
    """(denoiser, canonical spec) for a spec string of `kind` ('prior' or 'channel').

    Raises ValueError naming the unknown denoiser or parameter, or the parameter the class rejects.
    """
    _check_kind(kind)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{kind} must be a spec such as 'rademacher' or 'bernoulli-gauss:rho=0.3', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    choices = available(kind)
    if name not in choices:
        raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(choices)}")
    cls = choices[name]
    params = _parameters(cls)
    known = [p for p, _ in params]
    given = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        param, eq, text = item.partition("=")
        param = param.strip()
        if not eq:
            raise ValueError(f"{kind} {name}: expected PARAM=VALUE, got {item!r}")
        if param not in known:
            raise ValueError(f"{kind} {name} has no parameter {param!r}; its parameters: {', '.join(known) or 'none'}")
        if param in given:
            raise ValueError(f"{kind} {name}: parameter {param} given twice")
        values = [_number(v, name, param) for v in text.split("/")]
        given[param] = values if len(values) > 1 else values[0]
    missing = [p for p, default in params if default is inspect.Parameter.empty and p not in given]
    if missing:
        raise ValueError(f"{kind} {name} needs parameter(s) {', '.join(missing)}")
    try:
        denoiser = cls(**given)
    except ValueError as err:
        raise ValueError(f"{kind} {spec.strip()!r}: {err}") from None
    except TypeError as err:
        lists = [p for p, v in given.items() if isinstance(v, list)]
        why = f"{', '.join(lists)} must be a single number" if lists else str(err)
        raise ValueError(f"{kind} {spec.strip()!r}: {why}") from None
    values = {p: given.get(p, default) for p, default in params}
    canonical = name + "".join((":" if i == 0 else ",") + f"{p}={_format(v)}"
                               for i, (p, v) in enumerate(values.items()))
    return denoiser, canonical


def describe(kind):
    """Lines for --help: each available denoiser of `kind` as a spec with its defaults, and its summary."""
    lines = []
    for name, cls in available(kind).items():
        params = ",".join(p if default is inspect.Parameter.empty else f"{p}={_format(default)}"
                          for p, default in _parameters(cls))
        summary = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
        lines.append(f"  {name + (':' + params if params else '')}\n      {summary}")
    return "\n".join(lines)
