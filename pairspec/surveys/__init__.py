"""Survey adapters and simulators, and their registries.

A survey is one sub-package (pairspec/surveys/<name>/, or a package of its own) that registers
- an adapter class under the entry-point group "pairspec.surveys" (`pairspec ingest NAME ...`), and
- a simulator object under "pairspec.simulators" (`pairspec simulate NAME ...`).
The built-in surveys are listed here as well, so a source checkout works without installed metadata.
Nothing is imported until a survey is asked for (no import-time side effects, no heavy imports).

Optional hooks an adapter class may define, found by name:
- `can_read(path) -> bool` and `read_file(path) -> StarRecord` (classmethod / method): `pairspec predict`
  on the survey's own spectrum files;
- `visit_fitter() -> object with .fit(flux, ivar, pixmask=None) and .label_names`: the visit-level
  pipeline baseline of `pairspec evaluate --emulator-fit`;
- `paper_targets`, a class attribute {label: sigma}: published visit-level scatter targets at S/N < 60
  that `pairspec evaluate` reports beside its own figures (APOGEE: the TSN paper's);
- `star_flag_bits`, a class attribute {bit: name}: the names of StarRecord.star_flags bits, written as
  SFLAGn cards of the star catalogue beside its `survey_flags` column.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

# the survey `pairspec demo` simulates unless told otherwise
DEMO_SURVEY = "apogee"
ADAPTER_GROUP = "pairspec.surveys"
SIMULATOR_GROUP = "pairspec.simulators"
_BUILTIN_ADAPTERS = {
    "apogee": "pairspec.surveys.apogee:ApogeeDR17Adapter",
    "gaia_rvs": "pairspec.surveys.gaia_rvs:GaiaRvsAdapter",
    "lamost": "pairspec.surveys.lamost:LamostAdapter",
    "sdssv": "pairspec.surveys.sdssv:SdssvAdapter",
}
_BUILTIN_SIMULATORS = {
    "apogee": "pairspec.surveys.apogee.simulator:SIMULATOR",
    "gaia_rvs": "pairspec.surveys.gaia_rvs.simulator:SIMULATOR",
    "lamost": "pairspec.surveys.lamost.simulator:SIMULATOR",
    "sdssv": "pairspec.surveys.sdssv.simulator:SIMULATOR",
}


def _load(spec: str):
    module, _, attr = spec.partition(":")
    obj = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _registry(group: str, builtin: dict) -> dict:
    """name -> loader (an entry point or a builtin spec) of one group; installed entry points win."""
    found = {name: spec for name, spec in builtin.items()}
    for ep in entry_points(group=group):
        found[ep.name.lower()] = ep
    return found


def _get(group: str, builtin: dict, name: str, what: str):
    reg = _registry(group, builtin)
    key = str(name).lower()
    if key not in reg:
        raise KeyError(f"unknown survey {name!r} for {what}; available: {', '.join(sorted(reg)) or 'none'}")
    item = reg[key]
    return item.load() if hasattr(item, "load") else _load(item)


def available() -> list[str]:
    """Names of the registered survey adapters."""
    return sorted(_registry(ADAPTER_GROUP, _BUILTIN_ADAPTERS))


def simulators() -> list[str]:
    """Names of the registered survey simulators."""
    return sorted(_registry(SIMULATOR_GROUP, _BUILTIN_SIMULATORS))


def adapter_class(name: str):
    return _get(ADAPTER_GROUP, _BUILTIN_ADAPTERS, name, "ingest")


def get_adapter(name: str, **options):
    """Instantiate the adapter registered as `name` (case-insensitive) with its options; an option the
    adapter does not take is a ValueError naming the option and the ones it does take."""
    cls = adapter_class(name)
    options = _checked_options(name, cls, options)
    try:
        return cls(**options)
    except TypeError as err:
        import inspect

        params = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
        raise ValueError(f"survey {name!r}: {err}; its options are: {', '.join(params) or 'none'}") from err


def _checked_options(name: str, cls, options: dict) -> dict:
    """The options with the types their defaults promise, or a ValueError naming the option: a yes/no option
    (a bool default) takes only true or false (`strict="false"` would otherwise switch it on), a whole-number
    one a whole number, a numeric one a number (radii > 0); `bad_bits` is a list of bits 0-62, `columns` and
    `label_columns` mappings; `labels` given as one text is a comma-separated list ("teff" -> ["teff"])."""
    import inspect

    params = inspect.signature(cls).parameters
    out = dict(options)
    for key, value in options.items():
        if key not in params:
            continue  # the constructor says which options there are
        default = params[key].default
        bad = f"survey {name!r}: option {key} must be"
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{bad} true or false, got {value!r}")  # noqa: TRY004
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, int) and not isinstance(default, bool):
            if not (number and float(value).is_integer()):
                raise ValueError(f"{bad} a whole number, got {value!r}")
            out[key] = int(value)
        if (isinstance(default, float) or key == "min_snr") and value is not None and not number:
            raise ValueError(f"{bad} a number, got {value!r}")
        if key.endswith("radius") and number and not value > 0:
            raise ValueError(f"{bad} > 0, got {value!r}")
        if key == "labels" and isinstance(value, str):
            out[key] = [v.strip() for v in value.split(",") if v.strip()]
        if key in ("columns", "label_columns") and value is not None and not isinstance(value, dict):
            raise ValueError(f"{bad} a mapping, e.g. {{teff: TEFF_COLUMN}}, got {value!r}")
        if key == "bad_bits" and value is not None:
            bits = value if isinstance(value, (list, tuple)) else None
            if bits is None or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 62 for b in bits):
                raise ValueError(f"{bad} a list of bit numbers 0-62, e.g. [0, 1, 12], got {value!r}")
    return out


def get_simulator(name: str):
    """The simulator registered as `name`: an object with `.name` and `.simulate(out, n_stars, seed,
    workers, store_only, progress) -> dict` (see surveys/base.py, Simulator)."""
    return _get(SIMULATOR_GROUP, _BUILTIN_SIMULATORS, name, "simulate")


def store_visit_fitter(store):
    """visit_fitter for a pair store: its survey's, with the ingest options the store was made with (None
    where the survey has none)."""
    return visit_fitter(store.survey, **dict(store.provenance.get("adapter_options") or {}))


def visit_fitter(name: str, **options):
    """The survey's visit-level fit baseline (None if its adapter has no `visit_fitter` hook, or none for
    these adapter options, e.g. SDSS-V BOSS spectra). Options the hook does not take are ignored: they are
    the store's ingest options, most of which say nothing about the fit."""
    try:
        cls = adapter_class(name)
    except KeyError:
        return None
    hook = getattr(cls, "visit_fitter", None)
    if hook is None:
        return None
    import inspect

    params = inspect.signature(hook).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return hook(**options)
    return hook(**{k: v for k, v in options.items() if k in params})


def _adapter_mapping(name: str, attr: str) -> dict:
    """A mapping class attribute of the survey's adapter; {} if it has none (or is not installed here)."""
    try:
        cls = adapter_class(name)
    except KeyError:
        return {}
    return dict(getattr(cls, attr, None) or {})


def paper_targets(name: str) -> dict:
    """{label: sigma} the survey's adapter publishes as visit-level targets at S/N < 60; {} if none."""
    return {str(k): float(v) for k, v in _adapter_mapping(name, "paper_targets").items()}


def star_flag_bits(name: str) -> dict[int, str]:
    """{bit: name} of the survey adapter's star_flags bits; {} if it names none."""
    return {int(k): str(v) for k, v in _adapter_mapping(name, "star_flag_bits").items()}


def file_reader(name: str, **options):
    """An adapter of survey `name` that reads its spectrum files (`can_read`/`read_file`), or a KeyError
    saying the survey has none."""
    adapter = get_adapter(name, **options)
    if not (hasattr(adapter, "can_read") and hasattr(adapter, "read_file")):
        raise KeyError(f"survey {name!r} has no reader for single spectrum files")
    return adapter


def parse_options(items) -> dict:
    """`--option KEY=VALUE` strings -> dict; VALUE parsed as YAML (true, 3, [9, 12], text)."""
    import yaml

    out = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {item!r}: expected KEY=VALUE, e.g. --option strict=true")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            problem = str(getattr(err, "problem", None) or err).strip()
            raise ValueError(f"--option {item!r}: the value is not valid YAML ({problem}); write lists as [a, b], "
                             "quote text with special characters") from err
    return out
