"""The whole config document: ``Config``, the sections it holds, the variants and cadence
each creator gets, and the checks that span sections."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Collection
from datetime import timedelta

from monitor.config.fields import Section
from monitor.config.rules import RULE_MODELS, Rule, RuleBase
from monitor.config.sections import (
    AccountConfig,
    ApiConfig,
    BudgetConfig,
    ChannelConfig,
    CreatorConfig,
    DefaultsConfig,
    HttpConfig,
    NotifyConfig,
    ReportConfig,
    RosterConfig,
    ScheduleConfig,
    StorageConfig,
    VariantConfig,
)
from monitor.errors import ConfigError
from monitor.model import CORE, FANS, NOTES, Creator, DateType, Variant
from monitor.validation import section_keys, unknown

#: what a ``[[creators]]`` entry sets beyond who it is (``Creator``'s user_id, name and tags):
#: its variant keys, variants, sources and cadences, read in one call, and their defaults
_OWN = tuple(
    f
    for f in dataclasses.fields(CreatorConfig)
    if f.name not in {g.name for g in dataclasses.fields(Creator)}
)
_own_settings = operator.attrgetter(*(f.name for f in _OWN))
_NOTHING_OWN = tuple(f.default for f in _OWN)


class Config(Section):
    api: ApiConfig = ApiConfig()
    budget: BudgetConfig = BudgetConfig()
    storage: StorageConfig = StorageConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    creators: tuple[CreatorConfig, ...] = ()
    roster: RosterConfig = RosterConfig()
    channels: tuple[ChannelConfig, ...] = ()
    rules: tuple[Rule, ...] = ()
    notify: NotifyConfig = NotifyConfig()
    reports: tuple[ReportConfig, ...] = ()
    http: HttpConfig = HttpConfig()
    account: AccountConfig = AccountConfig()

    def variants_of(self, creator: CreatorConfig) -> tuple[Variant, ...]:
        """The variants tracked for a creator: its own overrides on top of ``[defaults]``.

        Creators without overrides share one tuple (and one ``Variant``): compare with ``is``
        to group them."""
        if not creator.variants and not _overrides(creator):
            return self._default_variants()  # the common case, 100,000 times at start-up
        base = {
            key: getattr(creator, key) or getattr(self.defaults, key)
            for key in ("business", "note_type", "date_type", "advertise")
        }
        if not creator.variants:
            return (Variant(**base),)
        return tuple(
            Variant(**{key: getattr(v, key) or base[key] for key in base}) for v in creator.variants
        )

    @staticmethod
    def follows_defaults(creator: CreatorConfig) -> bool:
        """Whether a creator sets none of its own variants, sources or cadences: its series and
        their cadences are then ``[defaults]``' and the same as every such creator's (the
        common case, asked 100,000 times at a start: one call, no tuple of variants made)."""
        return _own_settings(creator) == _NOTHING_OWN

    @property
    def default_variant(self) -> Variant:
        """``[defaults]``' core variant: that of every creator that sets none of its own."""
        return self._default_variants()[0]

    def _default_variants(self) -> tuple[Variant, ...]:
        """The variants of a creator without overrides: ``[defaults]``' one, as one tuple that
        all of them share. Kept beside the ``defaults`` it was made from, so a ``model_copy``
        with other defaults makes its own."""
        made = self.__dict__.get("_default_variants_of")
        if made is None or made[0] is not self.defaults:
            d = self.defaults
            made = (d, (Variant(d.business, d.note_type, d.date_type, d.advertise),))
            self.__dict__["_default_variants_of"] = made  # a cache, not a field: frozen holds
        return made[1]

    def every_of(self, creator: CreatorConfig) -> timedelta:
        return creator.every or self.defaults.every

    def sources_of(self, creator: CreatorConfig) -> tuple[str, ...]:
        """The sources a creator is tracked with: its own ``sources``, else ``[defaults]``'."""
        return creator.sources or self.defaults.sources

    def every_source_of(self, creator: CreatorConfig, source: str) -> timedelta:
        """How often ``source`` is read for a creator. The creator's own settings come first
        (its ``every_source``, then its ``every``), then ``[defaults]``' (``every_source``,
        then ``every``): a per-source cadence overrides ``every`` at the same level."""
        for level in (creator, self.defaults):
            per_source = level.every_source
            if per_source is not None and (every := getattr(per_source, source)) is not None:
                return every  # type: ignore[no-any-return]
            if level.every is not None:
                return level.every
        raise AssertionError("[defaults] every always has a value")

    def series_of(self, creator: CreatorConfig) -> list[tuple[str, Variant]]:
        """A creator's series, by source: each core variant (``core``), one follower series
        over the widest window of its variants (``fans``: one call backfills it all; the
        narrower window would buy the same days twice), and one note list (``notes``)."""
        variants, sources = self.variants_of(creator), self.sources_of(creator)
        series: list[tuple[str, Variant]] = []
        if CORE in sources:
            series += [(CORE, variant) for variant in variants]
        if FANS in sources:
            days = (v.date_type for v in variants)
            widest = DateType.DAY_90 if DateType.DAY_90 in days else DateType.DAY_30
            series.append((FANS, Variant.for_source(FANS, widest)))
        if NOTES in sources:
            series.append((NOTES, Variant.for_source(NOTES)))
        return series

    def rule_channels(self, rule: RuleBase) -> tuple[str, ...]:
        return rule.channels if rule.channels is not None else tuple(c.name for c in self.channels)


def _overrides(creator: VariantConfig | CreatorConfig) -> bool:
    return not (
        creator.business is None
        and creator.note_type is None
        and creator.date_type is None
        and creator.advertise is None
    )


def cross_check(
    config: Config,
    *,
    unknown_channels: Collection[str] = (),
    unknown_creators: Collection[str] = (),
) -> list[ConfigError]:
    """Checks that span sections; each problem is a ConfigError naming the offending key.

    ``unknown_channels`` and ``unknown_creators``: names of entries left out for problems of
    their own, which a rule may name without a second problem."""
    problems = [
        *_duplicates("creators", [c.user_id for c in config.creators], "user_id"),
        *_duplicates("channels", [c.name for c in config.channels], "name"),
        *_duplicates("rules", [r.name for r in config.rules], "name"),
        *_duplicates("reports", [r.name for r in config.reports], "name"),
    ]
    channel_names = [c.name for c in config.channels]
    scoped = any(r.creators for r in config.rules) or any(r.creators for r in config.reports)
    known_ids = {c.user_id for c in config.creators} if scoped else set()
    for section, entries in (("rules", config.rules), ("reports", config.reports)):
        for i, entry in enumerate(entries):
            problems += (
                ConfigError(f"{section}[{i}].channels", unknown("channel", name, channel_names))
                for name in entry.channels or ()
                if name not in channel_names and name not in unknown_channels
            )
            problems += (
                ConfigError(f"{section}[{i}].creators", f"{user_id!r} is not a tracked creator")
                for user_id in entry.creators
                if user_id not in known_ids and user_id not in unknown_creators
            )
    for i, creator in enumerate(config.creators):
        if len(creator.variants) < 2:
            continue  # nothing to repeat
        variants = config.variants_of(creator)
        if len(set(variants)) != len(variants):
            problems.append(
                ConfigError(f"creators[{i}].variants", "the same variant is listed twice")
            )
    if config.budget.burst > config.budget.calls_per_minute:
        problems.append(ConfigError("budget.burst", "must not exceed budget.calls_per_minute"))
    return problems


def _duplicates(section: str, values: list[str], key: str) -> list[ConfigError]:
    if len(set(values)) == len(values):
        return []  # the usual case, found in one C call (100,000 creators at a start)
    seen: set[str] = set()
    found: list[ConfigError] = []
    for i, value in enumerate(values):
        if value in seen:
            found.append(ConfigError(f"{section}[{i}].{key}", f"duplicate {key} {value!r}"))
        seen.add(value)
    return found


def keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys accepted at a place in the config (pydantic's loc), for "did you mean"."""
    return section_keys(Config, loc, tagged=RULE_MODELS)
