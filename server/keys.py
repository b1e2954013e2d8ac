"""Every Redis key centric uses is built here, nowhere else.

Keyspace (``P`` is the configurable prefix, default ``centric``; ``<node>`` is a typed id
``<type>:<value>`` such as ``visitor_id:abc`` or ``customer_id:42`` (server.identities);
``NN`` is its shard, ``00``-``15``, from CRC32 of the node name):

====================================  ======  ===========================================
key                                   type    what
====================================  ======  ===========================================
``{P:cfg}:exps``                      set     keys of all defined experiments
``{P:cfg}:exp:<experiment>``          hash    ``rev`` (revision), ``json`` (definition)
``{P:cfg}:ver``                       int     bumped on every definition change
``{P:auth}:key:<sha256(key)>``        hash    API key: ``role``, ``name``, ``created_at``,
                                              ``display`` (first 10 characters),
                                              ``last_used``
``{P:auth}:keys``                     set     SHA-256 digests of all API keys (the index)
``{P:auth}:console-secret``           string  the console's session-signing secret (made once)
``{P:auth}:session:<id>``             string  a console session (JSON, expires with it)
``{P:sNN}:pr:<node>``                 hash    the visitor hash, everything one visitor holds:
                                              profile fields ``first_seen``, ``last_seen``,
                                              ``ch:<channel>`` (epoch ms), ``known``,
                                              lifecycle ``fp``/``lp`` (first/last purchase
                                              ms), ``pc`` (purchases), ``ltv``, ``fv``
                                              (the first purchase's value), ``cid``/``eh``
                                              (the known customer); predictions
                                              ``pa`` (P(alive)), ``e90`` (purchases in the
                                              next 90 days), ``clv`` (value in the next 365
                                              days), ``pt`` (ms they were computed at);
                                              attributes ``a:<name>`` -> JSON value;
                                              assignments
                                              ``x:<experiment>`` -> one record line
                                              (server.stores.assignment_record); the latest
                                              32 event ids counted ``e:<event id>`` -> ms;
                                              for a linked id only ``alias`` -> canonical
                                              node
``{P:sNN}:ev:<node>``                 zset    older event ids counted within the dedupe
                                              window (score = ms), only for a visitor with
                                              more than 32 of them
``{P:sNN}:by``                        zset    buyers: every known customer's node that
                                              recorded a purchase (score = ms its history
                                              last changed: a purchase arrived, identify
                                              or a merge); the customer-value fit and the
                                              moment sweep walk it
``{P:sNN}:ln:<node>``                 hash    linked ids of a canonical profile: id -> type
``{P:sNN}:lk:<node>``                 string  merge lock (token, short TTL): decide/track
                                              wait while it exists
``{P:cfg}:personas``                  string  ordered persona rules (JSON)
``{P:cfg}:audit``                     stream  audit log: one entry per change to an
                                              experiment, the personas or an API key
                                              (``at`` ms, ``actor``, ``action``,
                                              ``target_type``, ``target``, ``details``
                                              JSON; capped, server.stores.audit)
``{P:cfg}:sg:<experiment>:<seed>``    set     admitted segments ``persona|channel`` (capped)
``{P:cfg}:clv``                       string  the fitted customer-value model (JSON,
                                              server.stores.customer_value)
``{P:cfg}:moments``                   string  the moment definitions (JSON list)
``{P:cfg}:mm:<moment>``               zset    the moment's current members: node -> entry
                                              sequence number (pages by it)
``{P:cfg}:ms:<moment>``               hash    per node that ever entered: ``entries|entered
                                              ms``
``{P:cfg}:mq:<moment>``               int     the last entry sequence number given (kept
                                              when the moment is deleted, so that a cursor
                                              never points back)
``{P:cfg}:mg``                        hash    moment name -> generation (random, new when
                                              a name is defined again after a delete)
``{P:cfg}:job:<name>``                string  lock of a background job (token, TTL): one
                                              host runs it at a time
``{P:cfg}:job:<name>:at``             string  ms the job last finished (any host)
``{P:sNN}:ct:<experiment>:<seed>``    hash    counter totals of one experiment, shard NN
``{P:sNN}:ce:<experiment>:<seed>``    hash    the same counters per allocation epoch, plus
                                              expected exposures (for reports)
``{P:sNN}:lg:<experiment>:<seed>``    stream  decision and outcome log (capped; no
                                              visitor ids, only decision ids)
====================================  ======  ===========================================

Counter fields (``g`` group is ``p`` for policy-served, ``h`` for holdout-served; in the
``ce`` hash every field gets a final ``|<epoch>`` part, epoch = floor(ms / epoch length)):

- ``n|g|persona|channel|variant``: distinct visitors assigned (exposures)
- ``c|metric|g|persona|channel|variant``: distinct visitors with the metric (conversions)
- ``s|metric|g|persona|channel|variant``: sum of value over visitors
- ``q|metric|g|persona|channel|variant``: sum over visitors of (visitor's value total)^2
- ``e|g|persona|channel|variant`` (``ce`` only): sum of the serving probability of this
  variant over all new assignments in the cell (expected exposures for the ratio check)
- ``x|g|persona|channel|variant``, ``xx|…`` (``ce`` only): sum of the exposed visitors'
  covariate ``cx`` and of its square (CUPED)
- ``xy|metric|g|persona|channel|variant`` (``ce`` only): sum over visitors of ``cx`` times
  the visitor's outcome (value total for revenue, 1 once converted)
- ``p|metric|…``, ``l|metric|…``, ``ll|metric|…``, ``ps|metric|…`` (``ce`` only, revenue
  metrics): visitors whose value total is positive, and the sums over them of ln(total),
  ln(total)^2 and total
- bandits only, in the ``ct`` hash, what the bandit learns from (bandits.evidence; policy and
  holdout together): per ``persona|channel|variant`` cell ``bt|…`` (ms of the cell's last
  update), ``bn|…`` (faded exposures), ``bw1|…``-``bw5|…`` (faded exposures still waiting,
  one per delay component), ``bc|…``, ``bs|…``, ``bq|…`` (faded conversions, value and
  squared-total changes of the primary metric); per shard ``bdk`` (first conversions seen)
  and ``bd1``-``bd5`` (their sums of exp(-delay / component mean))

Why one visitor hash: every key costs Redis about 90 bytes of its own (name, entry, expiry),
and a small hash is stored as one compact listpack, so one key per visitor is about half the
memory of four. The latest dedupe entries live with the visitor, so they last as long as it
does (anonymous visitors expire after a quiet TTL, 400 days by default, far beyond the 30-day
dedupe window); only a visitor with many events gets a second key, so that no visitor hash
grows without bound.

Why shards: a visitor's keys and the counters they update share one hash tag, so ``decide``
and ``track`` are one atomic Lua script per visitor that runs unchanged on Redis Cluster.
Counters are summed over the 16 shards when read.
Persona, channel, metric and variant names are restricted to ``[a-z0-9_-]`` so ``|``
can separate field parts.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

SHARDS = 16
ATTRIBUTE = "a:"  # field prefix of an attribute in the visitor hash
ASSIGNMENT = "x:"  # field prefix of an assignment record in the visitor hash
EVENT = "e:"  # field prefix of an event already counted (dedupe) in the visitor hash


def shard_of(visitor_id: str) -> int:
    """Stable shard number of a visitor id."""
    return zlib.crc32(visitor_id.encode()) % SHARDS


def hash_api_key(raw_key: str) -> str:
    """SHA-256 hex digest of an API key, the only form stored."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class VisitorKeys:
    """The keys of one visitor, all in the visitor's shard slot."""

    shard: int
    profile: str  # the visitor hash: profile fields, ATTRIBUTE, ASSIGNMENT and EVENT fields
    events: str  # the older event ids still within the dedupe window (zset)
    linked: str
    lock: str


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key builder for one deployment prefix."""

    prefix: str = "centric"

    def _tag(self, name: str) -> str:
        return "{" + self.prefix + ":" + name + "}"

    def shard_tag(self, shard: int) -> str:
        """Hash tag shared by every key of one visitor shard."""
        return self._tag(f"s{shard:02d}")

    @property
    def experiments_index(self) -> str:
        """Set of experiment keys."""
        return self._tag("cfg") + ":exps"

    def experiment(self, key: str) -> str:
        """Definition of one experiment."""
        return self._tag("cfg") + ":exp:" + key

    @property
    def personas(self) -> str:
        """Ordered persona rules."""
        return self._tag("cfg") + ":personas"

    @property
    def audit_log(self) -> str:
        """Stream of every change to definitions and keys (shares the definitions' slot)."""
        return self._tag("cfg") + ":audit"

    @property
    def config_version(self) -> str:
        """Counter bumped on every definition change."""
        return self._tag("cfg") + ":ver"

    def segments(self, experiment_key: str, seed: str) -> str:
        """Registry of an experiment's (persona, channel) segments, for the cap."""
        return self._tag("cfg") + ":sg:" + experiment_key + ":" + seed

    def buyers(self, shard: int) -> str:
        """Known customers of one shard who bought (zset, score = ms of the latest purchase)."""
        return self.shard_tag(shard) + ":by"

    @property
    def customer_value_model(self) -> str:
        """The fitted customer-value model (JSON)."""
        return self._tag("cfg") + ":clv"

    @property
    def moments(self) -> str:
        """The moment definitions (JSON list)."""
        return self._tag("cfg") + ":moments"

    def moment_members(self, moment: str) -> str:
        """Current members of a moment: node -> entry sequence number."""
        return self._tag("cfg") + ":mm:" + moment

    def moment_entries(self, moment: str) -> str:
        """Entry count and time of every node that ever entered a moment."""
        return self._tag("cfg") + ":ms:" + moment

    def moment_sequence(self, moment: str) -> str:
        """The last entry sequence number a moment gave (never deleted)."""
        return self._tag("cfg") + ":mq:" + moment

    @property
    def moment_generations(self) -> str:
        """Moment name -> generation: a sweep of a deleted moment's definition writes nothing."""
        return self._tag("cfg") + ":mg"

    def job_lock(self, job: str) -> str:
        """Lock that lets one host at a time run a background job."""
        return self._tag("cfg") + ":job:" + job

    def job_ran(self, job: str) -> str:
        """When a background job last finished (ms), whichever host ran it."""
        return self._tag("cfg") + ":job:" + job + ":at"

    def api_key(self, key_hash: str) -> str:
        """Stored API key record, addressed by the key's SHA-256."""
        return self._tag("auth") + ":key:" + key_hash

    @property
    def api_key_index(self) -> str:
        """Set of the SHA-256 digests of all API keys (to list them without a SCAN)."""
        return self._tag("auth") + ":keys"

    @property
    def console_secret(self) -> str:
        """The secret that signs console session cookies, shared by every worker and host."""
        return self._tag("auth") + ":console-secret"

    @property
    def console_sessions(self) -> str:
        """Prefix of the console's server-side sessions (the session id follows)."""
        return self._tag("auth") + ":session:"

    @property
    def api_key_pattern(self) -> str:
        """SCAN pattern matching every stored API key."""
        return self._tag("auth") + ":key:*"

    def visitor(self, visitor_id: str) -> VisitorKeys:
        """The visitor hash, older event ids, linked ids and merge lock of a visitor."""
        shard = shard_of(visitor_id)
        tag = self.shard_tag(shard)
        return VisitorKeys(
            shard=shard,
            profile=f"{tag}:pr:{visitor_id}",
            events=f"{tag}:ev:{visitor_id}",
            linked=f"{tag}:ln:{visitor_id}",
            lock=f"{tag}:lk:{visitor_id}",
        )

    def legacy_visitor(self, visitor_id: str) -> tuple[str, str]:
        """(attributes hash, assignments hash) of a visitor as centric 0.1 kept them apart."""
        tag = self.shard_tag(shard_of(visitor_id))
        return f"{tag}:at:{visitor_id}", f"{tag}:as:{visitor_id}"

    def legacy_visitor_pattern(self, shard: int) -> str:
        """SCAN pattern of the 0.1 attribute and assignment hashes of one shard."""
        return self.shard_tag(shard) + ":a[ts]:*"

    def counters(self, experiment_key: str, seed: str, shard: int) -> str:
        """Counter hash of one experiment in one visitor shard.

        The seed (new for every created experiment) is part of the key so that an experiment
        deleted and created again under the same key never inherits the old counts.
        """
        return f"{self.shard_tag(shard)}:ct:{experiment_key}:{seed}"

    def all_counters(self, experiment_key: str, seed: str) -> list[str]:
        """Counter hashes of one experiment across every shard."""
        return [self.counters(experiment_key, seed, s) for s in range(SHARDS)]

    def epoch_counters(self, experiment_key: str, seed: str, shard: int) -> str:
        """Per-epoch counter hash of one experiment in one visitor shard."""
        return f"{self.shard_tag(shard)}:ce:{experiment_key}:{seed}"

    def log(self, experiment_key: str, seed: str, shard: int) -> str:
        """Decision/outcome stream of one experiment in one visitor shard."""
        return f"{self.shard_tag(shard)}:lg:{experiment_key}:{seed}"

    def experiment_keys(self, experiment_key: str, seed: str) -> list[str]:
        """Every per-shard key of one experiment (totals, epochs, logs)."""
        return [
            key
            for s in range(SHARDS)
            for key in (self.counters(experiment_key, seed, s),
                        self.epoch_counters(experiment_key, seed, s),
                        self.log(experiment_key, seed, s))
        ]
