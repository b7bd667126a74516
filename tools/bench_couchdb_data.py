#!/usr/bin/env python3
"""A real CouchDB 3.5 data directory of a requested size, for benchmarks.

``build_couchdb_dataset(workdir, size)`` starts a private CouchDB 3.5 node
(``integration.services.couchdb3.CouchDB3Server``, the release that
tools/bootstrap installs into ``.cache/couchdb``) under ``workdir`` and
loads a shop's tenant data into it through ``POST /{db}/_bulk_docs``:
20 databases (orders, invoices, customers, events, sessions, ...) of
lognormally split sizes, JSON documents of 0.5-1.5 KB with ids, a nested
customer, items, totals, statuses, tags, timestamps and notes written with
a vocabulary of syllable words (gzip -6 packs the raw JSON about 3x).
Documents go in batches, from two threads; some get a second revision,
so the files hold old revisions as real ones do.  Six databases get a
design document of 1-3 views (one with ``_sum``, one with ``_count``),
each queried once, so CouchDB writes its view index files
(``.shards/<range>/<db>.<stamp>_design/mrview/<signature>.view``).
Loading stops when the files under the data directory add up to
``size`` bytes (views included: the loading stops early enough for
them, then tops up); the node then stops cleanly and the directory stays
for the caller.  The server's defaults are kept (``q = 2`` shards,
``file_compression = snappy``) except that its automatic compaction
daemon is held back (nothing is compacted: real data directories hold
uncompacted files), ``[cluster] n = 1`` and the system databases
``_users`` and ``_replicator`` exist, as on a configured single node.

    .venv/bin/python tools/bench_couchdb_data.py --size 64MiB
"""

import argparse
import concurrent.futures
import contextlib
import gzip
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

sys.path.insert(0, os.path.join(REPO, 'tools'))

import bench_backup  # noqa: E402  (its size parser)
from integration.services import couchdb3  # noqa: E402

MB = 10 ** 6
MiB = 2 ** 20

BATCH = 1000            # documents per _bulk_docs request, at most
THREADS = 2             # concurrent loaders (measured: see main's --threads)
VIEWS_EARLY = False     # design documents before the loading, or after
VIEW_SHARE_GUESS = 0.15  # view files / data dir, before it is measured
HTTP_TIMEOUT = (10, 3600)

# Compaction held back; n = 1 as a single node has it (q stays 2).
NODE_INI = """\
; Written by tools/bench_couchdb_data.py
[cluster]
n = 1

[smoosh.ratio_dbs]
min_size = infinity

[smoosh.slack_dbs]
min_size = infinity

[smoosh.ratio_views]
min_size = infinity

[smoosh.slack_views]
min_size = infinity
"""

# --- sizes ------------------------------------------------------------------

parse_size = bench_backup.parse_size


def _mib(size):
    return '%.1f MiB' % (size / MiB)


def data_files(data_dir):
    """[(path, size)] of every file below ``data_dir``."""
    found = []
    for base, _dirs, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(base, name)
            with contextlib.suppress(FileNotFoundError):
                found.append((path, os.lstat(path).st_size))
    return found


def directory_size(data_dir):
    """Sum of the sizes of the files below ``data_dir``."""
    return sum(size for _path, size in data_files(data_dir))


def file_kind(data_dir, path):
    """'view', 'database' (a user database's shard), 'system' or other."""
    rel = os.path.relpath(path, data_dir)
    name = os.path.basename(path)
    if name.endswith('.view'):
        return 'view'
    if name.endswith('.couch'):
        if rel.startswith('shards' + os.sep) and not name.startswith('_'):
            return 'database'
        return 'system'
    return 'other'


def sizes_by_kind(data_dir):
    """{kind: [file count, bytes]} of the files below ``data_dir``."""
    kinds = {}
    for path, size in data_files(data_dir):
        entry = kinds.setdefault(file_kind(data_dir, path), [0, 0])
        entry[0] += 1
        entry[1] += size
    return kinds


# --- the documents -----------------------------------------------------------

_SYLLABLES = ('ka', 'lo', 'mi', 'ne', 'ra', 'to', 'su', 'vi', 'de', 'ba',
              'zu', 'pe', 'qui', 'fo', 'gra', 'shi', 'an', 'el', 'or', 'ur',
              'ti', 'mo', 'sa', 'ven', 'dor', 'li', 'ho', 'ber', 'ca', 'ni',
              'ar', 'be', 'ci', 'du', 'ek', 'fa', 'gi', 'ha', 'im', 'jo',
              'ku', 'la', 'me', 'nu', 'op', 'pi', 'ro', 'se', 'tu', 'wa',
              'ya', 'ze', 'kr', 'str', 'th')
_STATUSES = {
    'order': (('delivered', 40), ('shipped', 15), ('paid', 15),
              ('pending', 12), ('cancelled', 8), ('returned', 5),
              ('refunded', 5)),
    'invoice': (('paid', 60), ('open', 20), ('overdue', 10), ('void', 5),
                ('draft', 5)),
    'ticket': (('closed', 50), ('open', 20), ('pending', 15),
               ('solved', 15)),
    'product': (('active', 80), ('discontinued', 12), ('draft', 8)),
    'customer': (('active', 85), ('inactive', 10), ('blocked', 5)),
    'event': (('info', 80), ('warning', 15), ('error', 5)),
}
_TAGS = ('priority', 'gift', 'bulk', 'export', 'promo', 'retail', 'b2b',
         'vip', 'wholesale', 'subscription', 'marketplace', 'mobile',
         'first-order', 'newsletter', 'fraud-check', 'manual')
_CURRENCIES = (('EUR', 55), ('USD', 25), ('GBP', 12), ('CHF', 8))
_COUNTRIES = ('DE', 'FR', 'NL', 'BE', 'AT', 'CH', 'IT', 'ES', 'GB', 'US',
              'PL', 'SE', 'DK', 'IE', 'PT')
_CHANNELS = ('web', 'ios', 'android', 'pos', 'api', 'phone')
_SHIPPING = ('standard', 'express', 'pickup', 'same-day', 'freight')
_PAYMENT = ('card', 'paypal', 'sepa', 'invoice', 'klarna', 'apple-pay')
_EVENTS = ('page.view', 'cart.add', 'cart.remove', 'checkout.start',
           'checkout.completed', 'login', 'logout', 'search', 'review.new',
           'coupon.applied', 'password.reset', 'email.open', 'email.click',
           'stock.low', 'price.changed', 'export.finished')
_AGENTS = ('Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 '
           'Firefox/128.0',
           'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 '
           '(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
           'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) '
           'AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 '
           'Mobile/15E148 Safari/604.1',
           'ShopApp/4.12.1 (Android 14; Pixel 8)',
           'ShopApp/4.11.0 (iOS 17.4; iPhone14,5)',
           'python-requests/2.32.3')
# 2023-01-01T00:00:00Z, and the span the documents' dates cover.
_EPOCH = 1672531200
_SPAN = 2 * 365 * 86400

# (database, kind of document, couchdb assigns the ids, share updated)
DATABASES = (                 # largest first, roughly
    ('orders', 'order', False, 0.25),
    ('events', 'event', True, 0.0),
    ('invoices', 'invoice', False, 0.20),
    ('customers', 'customer', False, 0.20),
    ('sessions', 'session', True, 0.40),
    ('payments', 'payment', False, 0.10),
    ('logs_2024', 'event', True, 0.0),
    ('tickets', 'ticket', False, 0.30),
    ('shipments', 'shipment', False, 0.30),
    ('catalog', 'product', False, 0.15),
    ('audit_log', 'event', True, 0.0),
    ('metrics', 'metric', True, 0.0),
    ('messages', 'message', True, 0.05),
    ('inventory', 'product', False, 0.30),
    ('carts', 'cart', False, 0.35),
    ('notifications', 'message', True, 0.10),
    ('reviews', 'review', False, 0.05),
    ('profiles', 'customer', False, 0.15),
    ('analytics', 'metric', True, 0.0),
    ('billing', 'invoice', False, 0.10),
)

# The design documents: {database: {view: (map, reduce or None)}}.
VIEWS = {
    'orders': {
        'by_status_date': (
            'function (doc) { if (doc.type === "order") { emit([doc.status, '
            'doc.created_at.slice(0, 10)], doc.total); } }', '_sum'),
        'by_city': (
            'function (doc) { if (doc.customer) { emit([doc.customer.country,'
            ' doc.customer.city], 1); } }', '_count'),
        'by_customer': (
            'function (doc) { if (doc.customer) { emit(doc.customer.id, '
            '{total: doc.total, status: doc.status}); } }', None),
    },
    'invoices': {
        'by_status_date': (
            'function (doc) { emit([doc.status, doc.created_at.slice(0, 7)],'
            ' doc.total); }', '_sum'),
    },
    'customers': {
        'by_city': (
            'function (doc) { if (doc.address) { emit([doc.address.country, '
            'doc.address.city], null); } }', '_count'),
        'by_email': (
            'function (doc) { if (doc.email) { emit(doc.email.toLowerCase(),'
            ' doc.name); } }', None),
    },
    'events': {
        'by_event_day': (
            'function (doc) { emit([doc.event, doc.ts.slice(0, 10)], 1); }',
            '_count'),
    },
    'tickets': {
        'by_status': (
            'function (doc) { emit([doc.status, doc.priority], '
            '{subject: doc.subject, customer: doc.customer.id}); }', None),
        'open_by_agent': (
            'function (doc) { if (doc.status !== "closed") { '
            'emit(doc.agent, 1); } }', '_count'),
    },
    'payments': {
        'by_method_day': (
            'function (doc) { emit([doc.method, doc.created_at.slice(0, 10)],'
            ' doc.amount); }', '_sum'),
    },
}


class FastRandom(random.Random):
    """random.Random with cheaper randint() and choice() (from random())."""

    def randint(self, a, b):
        return a + int(self.random() * (b - a + 1))

    def choice(self, seq):
        return seq[int(self.random() * len(seq))]


def _weighted(pairs):
    values = [value for value, _weight in pairs]
    cum = list(itertools.accumulate(weight for _value, weight in pairs))
    return values, cum


class Vocabulary:
    """Syllable words, drawn with Zipf's law like the words of a text."""

    def __init__(self, seed, size=12000, skew=0.8, offset=20.0,
                 stream=2 ** 18):
        rnd = random.Random(seed)
        words = set()
        while len(words) < size:
            words.add(''.join(rnd.choice(_SYLLABLES)
                              for _ in range(rnd.choice((1, 2, 2, 3, 3, 4)))))
        self.words = sorted(words, key=lambda w: (len(w), w))
        rnd.shuffle(self.words)
        self.cum = list(itertools.accumulate(
            (rank + offset) ** -skew for rank in range(size)))
        self.first = [w.title() for w in self.words[:300]]
        self.last = [w.title() + rnd.choice(('', 'er', 'son', 'mann', 'i'))
                     for w in self.words[300:800]]
        self.cities = [w.title() + rnd.choice(('', 'burg', 'ville', 'stad',
                                               'ton', 'heim'))
                       for w in self.words[800:950]]
        self.streets = [w.title() for w in self.words[950:1150]]
        self.domains = [w for w in self.words[1150:1200]] + [
            'mail', 'post', 'web']
        self.products = [' '.join(self.words[i:i + 2]).title()
                         for i in range(1200, 2200, 2)]
        self.categories = self.words[2200:2240]
        self.agents = [w.title() for w in self.words[2240:2270]]
        # Words drawn once by Zipf's law, in sentences of 6-14 words:
        # notes are slices of it, at random places (2^18 words, 1.7 MB).
        self.stream = rnd.choices(self.words, cum_weights=self.cum,
                                  k=stream)
        i = 0
        while i < stream - 1:
            i += rnd.randint(6, 14)
            if i < stream - 1:
                self.stream[i - 1] += '.'
                self.stream[i] = self.stream[i].title()

    def text(self, rnd, count):
        """``count`` words of sentences: a slice of a long drawn text."""
        if count <= 0:
            return ''
        start = int(rnd.random() * (len(self.stream) - count))
        words = self.stream[start:start + count]
        text = ' '.join(words).rstrip('.')
        return text[0].upper() + text[1:] + '.'


class Generator:
    """Documents of one database: deterministic for (seed, database)."""

    def __init__(self, vocab, rnd, name, kind, auto_id):
        self.v, self.rnd, self.name, self.kind = vocab, rnd, name, kind
        self.auto_id = auto_id
        self.count = 0
        self.statuses = _weighted(_STATUSES.get(
            {'shipment': 'order', 'payment': 'invoice', 'cart': 'order',
             'review': 'product', 'session': 'customer',
             'message': 'event', 'metric': 'event'}.get(kind, kind),
            _STATUSES['order']))
        self.currencies = _weighted(_CURRENCIES)
        self.make = getattr(self, '_make_' + kind)

    # Pieces.
    def _status(self):
        values, cum = self.statuses
        return self.rnd.choices(values, cum_weights=cum)[0]

    def _when(self):
        # Later documents are newer, as in a live database.
        rnd = self.rnd
        base = _EPOCH + (self.count * 97 % _SPAN)
        return base + rnd.randint(0, 86400)

    @staticmethod
    def _iso(ts):
        return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(ts))

    def _customer(self, full=True):
        rnd, v = self.rnd, self.v
        first, last = rnd.choice(v.first), rnd.choice(v.last)
        number = rnd.randint(1, 250000)
        customer = {'id': 'cust-%06d' % number,
                    'name': '%s %s' % (first, last),
                    'city': rnd.choice(v.cities),
                    'country': rnd.choice(_COUNTRIES)}
        if full:
            customer['email'] = '%s.%s@%s.example' % (
                first.lower(), last.lower(), rnd.choice(v.domains))
            customer['phone'] = '+%d %d %07d' % (
                rnd.randint(1, 49), rnd.randint(10, 999),
                rnd.randint(0, 9999999))
        return customer

    def _address(self):
        rnd, v = self.rnd, self.v
        return {'street': '%d %s %s' % (rnd.randint(1, 240),
                                        rnd.choice(v.streets),
                                        rnd.choice(('Street', 'Road', 'Way',
                                                    'Allee', 'Platz'))),
                'zip': '%05d' % rnd.randint(1000, 99999),
                'city': rnd.choice(v.cities),
                'country': rnd.choice(_COUNTRIES)}

    def _items(self, count):
        rnd, v = self.rnd, self.v
        items = []
        for _ in range(count):
            index = int(len(v.products) * rnd.random() ** 2)
            items.append({'sku': '%s-%04d' % (v.products[index][:3].upper(),
                                              index),
                          'name': v.products[index],
                          'qty': rnd.choice((1, 1, 1, 2, 2, 3, 4, 6)),
                          'price': round(rnd.lognormvariate(3, 0.9), 2)})
        return items

    def _tags(self):
        return self.rnd.sample(_TAGS, self.rnd.choice((0, 1, 1, 2, 2, 3)))

    def _money(self):
        values, cum = self.currencies
        return self.rnd.choices(values, cum_weights=cum)[0]

    def _uuid(self):
        h = '%032x' % self.rnd.getrandbits(128)
        return '%s-%s-%s-%s-%s' % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

    def _id(self, prefix):
        if self.auto_id:
            return None
        return '%s-%s-%07d' % (prefix, self.name[:3], self.count)

    # Documents.
    def _make_order(self, prefix='order'):
        rnd = self.rnd
        ts = self._when()
        items = self._items(rnd.choice((1, 1, 2, 2, 3, 4, 5)))
        subtotal = round(sum(i['qty'] * i['price'] for i in items), 2)
        tax = round(subtotal * 0.19, 2)
        shipping = rnd.choice((0, 0, 4.9, 6.9, 12.5))
        return {'_id': self._id(prefix), 'type': prefix,
                'number': 'ORD-%08d' % (self.count * 7 + rnd.randint(0, 6)),
                'tenant': 'shop-%02d' % rnd.randint(1, 12),
                'checkout_id': self._uuid(),
                'channel': rnd.choice(_CHANNELS),
                'customer': self._customer(),
                'items': items, 'subtotal': subtotal, 'tax': tax,
                'shipping_cost': shipping,
                'total': round(subtotal + tax + shipping, 2),
                'currency': self._money(), 'status': self._status(),
                'payment': {'method': rnd.choice(_PAYMENT),
                            'captured': rnd.random() < 0.8},
                'shipping': {'method': rnd.choice(_SHIPPING),
                             'address': self._address()},
                'tags': self._tags(), 'created_at': self._iso(ts),
                'updated_at': self._iso(ts + rnd.randint(0, 3600)),
                'note': self.v.text(rnd, rnd.randint(0, 30))}

    def _make_cart(self):
        doc = self._make_order('cart')
        del doc['payment'], doc['number']
        doc['expires_at'] = self._iso(self._when() + 7 * 86400)
        return doc

    def _make_invoice(self):
        rnd = self.rnd
        ts = self._when()
        lines = self._items(rnd.choice((1, 2, 2, 3, 4, 6)))
        net = round(sum(i['qty'] * i['price'] for i in lines), 2)
        return {'_id': self._id('inv'), 'type': 'invoice',
                'number': 'INV-%d-%06d' % (2023 + (ts - _EPOCH) // 31536000,
                                           self.count),
                'order': 'order-ord-%07d' % rnd.randint(0, self.count + 10),
                'customer': self._customer(),
                'billing_address': self._address(), 'lines': lines,
                'pdf_sha1': '%040x' % rnd.getrandbits(160),
                'net': net, 'vat_rate': rnd.choice((0.19, 0.2, 0.21, 0.077)),
                'total': round(net * 1.19, 2), 'currency': self._money(),
                'status': self._status(), 'tags': self._tags(),
                'created_at': self._iso(ts),
                'due_at': self._iso(ts + 30 * 86400),
                'note': self.v.text(rnd, rnd.randint(0, 40))}

    def _make_payment(self):
        rnd = self.rnd
        ts = self._when()
        return {'_id': self._id('pay'), 'type': 'payment',
                'invoice': 'inv-inv-%07d' % rnd.randint(0, self.count + 10),
                'customer': self._customer(), 'method': rnd.choice(_PAYMENT),
                'amount': round(rnd.lognormvariate(4, 1), 2),
                'currency': self._money(), 'status': self._status(),
                'provider': {'name': rnd.choice(('stripe', 'adyen', 'mollie',
                                                 'paypal')),
                             'reference': '%016x' % rnd.getrandbits(64),
                             'fee': round(rnd.random() * 3, 2)},
                'created_at': self._iso(ts), 'tags': self._tags(),
                'note': self.v.text(rnd, rnd.randint(10, 60))}

    def _make_shipment(self):
        rnd = self.rnd
        ts = self._when()
        return {'_id': self._id('shp'), 'type': 'shipment',
                'order': 'order-ord-%07d' % rnd.randint(0, self.count + 10),
                'customer': self._customer(), 'address': self._address(),
                'carrier': rnd.choice(('dhl', 'ups', 'dpd', 'gls', 'post')),
                'tracking': '%012d' % rnd.randint(0, 10 ** 12 - 1),
                'parcels': [{'weight_g': rnd.randint(80, 20000),
                             'items': self._items(rnd.randint(1, 3))}
                            for _ in range(rnd.choice((1, 1, 1, 2)))],
                'status': self._status(), 'created_at': self._iso(ts),
                'events': [{'at': self._iso(ts + 3600 * i), 'where':
                            rnd.choice(self.v.cities)}
                           for i in range(rnd.randint(1, 4))],
                'note': self.v.text(rnd, rnd.randint(0, 25))}

    def _make_customer(self):
        rnd, v = self.rnd, self.v
        ts = self._when()
        customer = self._customer()
        return {'_id': self._id('cust'), 'type': 'customer',
                'name': customer['name'], 'email': customer['email'],
                'phone': customer['phone'], 'address': self._address(),
                'crm_id': self._uuid(),
                'addresses': [self._address()
                              for _ in range(rnd.choice((0, 0, 1, 2)))],
                'preferences': {'newsletter': rnd.random() < 0.4,
                                'language': rnd.choice(('de', 'en', 'fr',
                                                        'nl', 'it')),
                                'categories': rnd.sample(v.categories, 3)},
                'loyalty': {'tier': rnd.choice(('none', 'silver', 'gold',
                                                'platinum')),
                            'points': rnd.randint(0, 20000)},
                'status': self._status(), 'tags': self._tags(),
                'created_at': self._iso(ts),
                'last_login': self._iso(ts + rnd.randint(0, _SPAN // 4)),
                'note': v.text(rnd, rnd.randint(0, 50))}

    def _make_event(self):
        rnd = self.rnd
        ts = self._when()
        return {'type': 'event', 'event': rnd.choice(_EVENTS),
                'ts': self._iso(ts), 'severity': self._status(),
                'actor': {'id': 'cust-%06d' % rnd.randint(1, 250000),
                          'ip': '10.%d.%d.%d' % (rnd.randint(0, 255),
                                                 rnd.randint(0, 255),
                                                 rnd.randint(1, 254)),
                          'agent': rnd.choice(_AGENTS)},
                'session': '%032x' % rnd.getrandbits(128),
                'trace_id': self._uuid(),
                'customer': self._customer(full=False),
                'payload': {'path': '/%s/%s' % (rnd.choice(self.v.categories),
                                                rnd.choice(self.v.words)),
                            'items': self._items(rnd.choice((0, 1, 2))),
                            'duration_ms': rnd.randint(3, 4000)},
                'tags': self._tags(),
                'message': self.v.text(rnd, rnd.randint(5, 40))}

    def _make_session(self):
        rnd = self.rnd
        ts = self._when()
        return {'type': 'session',
                'user': 'cust-%06d' % rnd.randint(1, 250000),
                'token': '%064x' % rnd.getrandbits(256),
                'created_at': self._iso(ts),
                'last_seen': self._iso(ts + rnd.randint(0, 7200)),
                'agent': rnd.choice(_AGENTS), 'channel': rnd.choice(_CHANNELS),
                'customer': self._customer(full=False),
                'cart': self._items(rnd.choice((0, 1, 2, 3))),
                'flash': self.v.text(rnd, rnd.randint(0, 30)),
                'status': self._status()}

    def _make_metric(self):
        rnd = self.rnd
        ts = self._when()
        name = rnd.choice(('http.requests', 'http.latency', 'orders.count',
                           'cart.value', 'stock.level', 'queue.depth'))
        return {'type': 'metric', 'name': name, 'ts': self._iso(ts),
                'host': 'web-%02d' % rnd.randint(1, 24),
                'tags': {'region': rnd.choice(('eu-west', 'eu-central',
                                               'us-east')),
                         'shop': 'shop-%02d' % rnd.randint(1, 12)},
                'points': [[ts + 10 * i, round(rnd.lognormvariate(2, 1), 3)]
                           for i in range(rnd.randint(8, 30))],
                'customer': self._customer(full=False),
                'comment': self.v.text(rnd, rnd.randint(0, 15))}

    def _make_product(self):
        rnd, v = self.rnd, self.v
        ts = self._when()
        index = self.count % len(v.products)
        return {'_id': self._id('sku'), 'type': 'product',
                'ean': '%013d' % rnd.randrange(10 ** 13),
                'name': '%s %d' % (v.products[index], self.count),
                'categories': rnd.sample(v.categories, rnd.randint(1, 3)),
                'price': round(rnd.lognormvariate(3, 0.9), 2),
                'currency': self._money(), 'status': self._status(),
                'stock': [{'warehouse': rnd.choice(v.cities),
                           'qty': rnd.randint(0, 900)}
                          for _ in range(rnd.randint(1, 3))],
                'attributes': {'color': rnd.choice(('red', 'blue', 'black',
                                                    'white', 'green')),
                               'size': rnd.choice(('S', 'M', 'L', 'XL')),
                               'weight_g': rnd.randint(20, 9000)},
                'rating': {'avg': round(rnd.uniform(1, 5), 1),
                           'count': rnd.randint(0, 3000)},
                'supplier': self._customer(full=False),
                'tags': self._tags(), 'created_at': self._iso(ts),
                'description': v.text(rnd, rnd.randint(20, 90))}

    def _make_review(self):
        rnd = self.rnd
        ts = self._when()
        return {'_id': self._id('rev'), 'type': 'review',
                'product': 'sku-cat-%07d' % rnd.randint(0, 50000),
                'customer': self._customer(full=False),
                'stars': rnd.choice((5, 5, 5, 4, 4, 3, 2, 1)),
                'title': self.v.text(rnd, rnd.randint(2, 6)),
                'body': self.v.text(rnd, rnd.randint(20, 110)),
                'status': self._status(), 'created_at': self._iso(ts),
                'helpful': rnd.randint(0, 200), 'tags': self._tags(),
                'order': 'order-ord-%07d' % rnd.randint(0, 10 ** 6)}

    def _make_message(self):
        rnd = self.rnd
        ts = self._when()
        return {'type': 'message', 'kind': rnd.choice(('email', 'sms',
                                                       'push', 'chat')),
                'to': self._customer(), 'template': rnd.choice(_EVENTS),
                'message_id': '<%s@mail.shop.example>' % self._uuid(),
                'subject': self.v.text(rnd, rnd.randint(3, 8)),
                'body': self.v.text(rnd, rnd.randint(20, 80)),
                'sent_at': self._iso(ts), 'status': self._status(),
                'tags': self._tags()}

    def _make_ticket(self):
        rnd = self.rnd
        ts = self._when()
        return {'_id': self._id('tkt'), 'type': 'ticket',
                'subject': self.v.text(rnd, rnd.randint(3, 9)),
                'customer': self._customer(),
                'order': 'order-ord-%07d' % rnd.randint(0, 10 ** 5),
                'thread': self._uuid(),
                'priority': rnd.choice(('low', 'normal', 'normal', 'high',
                                        'urgent')),
                'agent': rnd.choice(self.v.agents),
                'status': self._status(), 'created_at': self._iso(ts),
                'messages': [{'from': rnd.choice(('customer', 'agent')),
                              'at': self._iso(ts + 600 * i),
                              'text': self.v.text(rnd, rnd.randint(5, 35))}
                             for i in range(rnd.randint(1, 4))],
                'tags': self._tags()}

    def document(self):
        self.count += 1
        doc = self.make()
        if doc.get('_id', 1) is None:
            del doc['_id']
        return doc

    def update(self, doc):
        """The document's second revision: a status change, a history."""
        rnd = self.rnd
        doc = dict(doc)
        if 'status' in doc:
            old, doc['status'] = doc['status'], self._status()
            doc['history'] = [{'from': old, 'to': doc['status'],
                               'at': self._iso(self._when() + 86400),
                               'by': rnd.choice(self.v.agents)}]
        doc['updated_at'] = self._iso(self._when() + 2 * 86400)
        doc['revision_note'] = self.v.text(rnd, rnd.randint(0, 12))
        return doc


# --- loading -----------------------------------------------------------------

class Database:
    """One database being loaded: its generator, share and progress."""

    def __init__(self, name, kind, auto_id, update_share, weight, vocab,
                 seed, batch):
        self.name, self.weight, self.batch = name, weight, batch
        self.update_share = update_share
        self.rnd = FastRandom('%s/%s' % (seed, name))
        self.gen = Generator(vocab, self.rnd, name, kind, auto_id)
        self.sent = 0                 # raw JSON bytes posted
        self.docs = 0
        self.updates = 0
        self.pending = []             # (doc, id, rev) to update next time
        self.busy = False

    def next_batch(self):
        """The _bulk_docs body: new documents and last batch's updates."""
        docs = [self.gen.document() for _ in range(self.batch)]
        updated = []
        for doc, doc_id, rev in self.pending:
            doc = self.gen.update(doc)
            doc['_id'], doc['_rev'] = doc_id, rev
            updated.append(doc)
        self.pending = []
        body = json.dumps({'docs': docs + updated},
                          separators=(',', ':')).encode()
        return docs, len(updated), body

    def absorb(self, docs, n_updates, body, results):
        """Count what CouchDB stored; choose the docs to update later."""
        failed = [r for r in results if 'error' in r]
        if failed:
            raise RuntimeError('%s: _bulk_docs refused %d documents, first: '
                               '%r' % (self.name, len(failed), failed[0]))
        self.sent += len(body)
        self.docs += len(docs)
        self.updates += n_updates
        if self.update_share:
            for doc, result in zip(docs, results, strict=False):
                if self.rnd.random() < self.update_share:
                    self.pending.append((doc, result['id'], result['rev']))


class Loader:
    """Feeds the databases in proportion to their weights until told."""

    def __init__(self, server, databases, threads, log):
        self.server, self.dbs, self.threads = server, databases, threads
        self.log = log
        self.lock = threading.Lock()
        self.data_dir = str(server.data_dir)
        self.sent = 0
        self.requests = 0

    def _pick(self):
        with self.lock:
            idle = [db for db in self.dbs if not db.busy]
            if not idle:
                return None
            db = min(idle, key=lambda d: (d.sent + 1) / d.weight)
            db.busy = True
            return db

    def _worker(self, goal, stop):
        session = self.server.session()
        url = self.server.url
        try:
            while not stop.is_set():
                db = self._pick()
                if db is None:
                    time.sleep(0.01)
                    continue
                try:
                    docs, n_updates, body = db.next_batch()
                    response = session.post(
                        '%s/%s/_bulk_docs' % (url, db.name), data=body,
                        headers={'Content-Type': 'application/json'},
                        timeout=HTTP_TIMEOUT)
                    response.raise_for_status()
                    db.absorb(docs, n_updates, body, response.json())
                finally:
                    db.busy = False
                with self.lock:
                    self.sent += len(body)
                    self.requests += 1
                if directory_size(self.data_dir) >= goal:
                    stop.set()
        finally:
            session.close()

    def load(self, goal):
        """POST batches until the data directory holds ``goal`` bytes."""
        if directory_size(self.data_dir) >= goal:
            return
        stop = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            futures = [pool.submit(self._worker, goal, stop)
                       for _ in range(self.threads)]
            try:
                for future in concurrent.futures.as_completed(futures):
                    future.result()
            finally:
                stop.set()


def _split_weights(rnd, count, sigma=1.0):
    """Lognormal shares, largest first, neighbours swapped at random."""
    weights = sorted((rnd.lognormvariate(0, sigma) for _ in range(count)),
                     reverse=True)
    for i in range(0, count - 1, 2):
        if rnd.random() < 0.5:
            weights[i], weights[i + 1] = weights[i + 1], weights[i]
    total = sum(weights)
    return [w / total for w in weights]


def group_cpu_seconds(pgid):
    """CPU seconds (user + system) of the live processes of a group."""
    ticks = 0
    for proc in os.listdir('/proc'):
        if not proc.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % proc) as f:
                fields = f.read().rpartition(')')[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf('SC_CLK_TCK')


def own_cpu_seconds():
    times = os.times()
    return times.user + times.system


def _request(session, method, url, ok=(200, 201, 202), **kwargs):
    response = session.request(method, url, timeout=HTTP_TIMEOUT, **kwargs)
    if response.status_code not in ok:
        raise RuntimeError('%s %s: %s %s' % (method, url, response.status_code,
                                             response.text[:500]))
    return response.json()


def _design_doc(views):
    out = {}
    for view, (map_fun, reduce_fun) in views.items():
        out[view] = {'map': map_fun}
        if reduce_fun:
            out[view]['reduce'] = reduce_fun
    return {'_id': '_design/shop', 'language': 'javascript', 'views': out}


def _create_design_docs(server, session):
    for db, views in VIEWS.items():
        url = '%s/%s/_design/shop' % (server.url, db)
        if session.get(url, timeout=HTTP_TIMEOUT).status_code == 404:
            _request(session, 'PUT', url, json=_design_doc(views))


def _query_views(server, session, log):
    """Query every view once: CouchDB brings its index up to date."""
    start = time.perf_counter()
    for db, views in VIEWS.items():
        for view in views:
            url = '%s/%s/_design/shop/_view/%s' % (server.url, db, view)
            # A timeout of the coordinator while a big index builds is
            # answered 500 {"error":"timeout"}: the build goes on; ask again.
            for attempt in range(20):
                response = session.get(url, params={'limit': 1},
                                       timeout=HTTP_TIMEOUT)
                if response.status_code == 200:
                    break
                log('view %s/%s: %s %s, asking again' % (
                    db, view, response.status_code, response.text[:200]))
                time.sleep(min(2 ** attempt, 10))
            else:
                raise RuntimeError('view %s/%s never answered' % (db, view))
    return time.perf_counter() - start


def _wait_for(predicate, timeout):
    deadline = time.monotonic() + couchdb3.base.scaled(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _write_node_ini(server):
    path = server.config_dir / 'local.d' / '10-bench-couchdb-data.ini'
    path.write_text(NODE_INI)


def build_couchdb_dataset(workdir, size, seed=7, log=print):
    """Start a private CouchDB 3.5 node under workdir, load documents
    until its data directory holds >= size bytes (database files with
    snappy-compressed bodies, plus real view indexes), stop the node.
    Returns (data_dir, {database: doc_count}, file_count)."""
    data_dir, counts, files, _stats = _build(workdir, size, seed, log)
    return data_dir, counts, files


def _build(workdir, size, seed=7, log=print, threads=THREADS, batch=BATCH,
           views_early=VIEWS_EARLY):
    """build_couchdb_dataset, with the knobs and the statistics."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    node_dir = os.path.join(workdir, 'couchdb')
    if os.path.exists(node_dir):
        raise FileExistsError('%s exists: give a fresh workdir' % node_dir)
    server = couchdb3.CouchDB3Server(node_dir)
    stats = {'start': time.perf_counter(), 'view_seconds': 0.0}
    rnd = random.Random(seed)
    vocab = Vocabulary(seed)
    weights = _split_weights(rnd, len(DATABASES))
    try:
        server.install()
        _write_node_ini(server)
        server.start()
        data_dir = str(server.data_dir)
        session = server.session()
        stats['version'] = _request(session, 'GET', server.url)['version']
        # Unset in default.ini: the built-in default, snappy, applies.
        compression = session.get(
            server.url + '/_node/_local/_config/couchdb/file_compression',
            timeout=HTTP_TIMEOUT)
        stats['file_compression'] = (compression.json()
                                     if compression.status_code == 200
                                     else 'unset (default: snappy)')
        for db in ('_users', '_replicator'):
            _request(session, 'PUT', '%s/%s' % (server.url, db),
                     ok=(201, 202, 412))
        databases = []
        for (name, kind, auto_id, share), weight in zip(
                DATABASES, weights, strict=True):
            _request(session, 'PUT', '%s/%s' % (server.url, name),
                     ok=(201, 202))
            # Several batches even for the smallest database.
            expected_docs = weight * size / 900
            db_batch = max(25, min(batch, int(expected_docs / 8)))
            databases.append(Database(name, kind, auto_id, share, weight,
                                      vocab, seed, db_batch))
        if views_early:
            _create_design_docs(server, session)
        loader = Loader(server, databases, threads, log)
        cpu = own_cpu_seconds(), group_cpu_seconds(server.pid)
        # What querying the views adds to the loaded size: all the view
        # files, or what the indexer had not yet done when the loading
        # stopped (views_early).
        lag = 0.03 if views_early else VIEW_SHARE_GUESS
        goal = int(size * (1 - lag))
        for round_no in itertools.count(1):
            load_start = time.perf_counter()
            loader.load(goal)
            stats['load_seconds'] = stats.get('load_seconds', 0) + (
                time.perf_counter() - load_start)
            loaded = directory_size(data_dir)
            _create_design_docs(server, session)
            stats['view_seconds'] += _query_views(server, session, log)
            kinds = sizes_by_kind(data_dir)
            total = sum(n for _c, n in kinds.values())
            views = kinds.get('view', [0, 0])[1]
            log('round %d: %s loaded (%d requests, %s of JSON), %s with '
                'views (%s of view files)' % (
                    round_no, _mib(loaded), loader.requests,
                    _mib(loader.sent), _mib(total), _mib(views)))
            if total >= size:
                break
            if round_no >= 8:
                log('giving up below the size asked, after %d rounds' %
                    round_no)
                break
            lag = max(0.0, (total - loaded) / total)
            # The rest, less what its views will add.
            goal = total + max(int((size - total) * (1 - lag)), 64 * 1024)
        # CouchDB adds _users/_design/_auth some seconds after _users
        # appears: count the documents once it is there.
        _wait_for(lambda: session.get(
            server.url + '/_users/_design/_auth',
            timeout=HTTP_TIMEOUT).status_code == 200, 30)
        counts = {}
        for db in _request(session, 'GET', server.url + '/_all_dbs'):
            counts[db] = _request(session, 'GET', '%s/%s' % (
                server.url, db))['doc_count']
        session.close()
        stats['python_cpu'] = own_cpu_seconds() - cpu[0]
        stats['couchdb_cpu'] = group_cpu_seconds(server.pid) - cpu[1]
        stats['updates'] = sum(db.updates for db in databases)
        stats['json_bytes'] = loader.sent
        stats['requests'] = loader.requests
    finally:
        stop_start = time.perf_counter()
        server.stop()
        stats['stop_seconds'] = time.perf_counter() - stop_start
    stats['seconds'] = time.perf_counter() - stats['start']
    files = data_files(data_dir)
    return data_dir, counts, len(files), stats


# --- the report --------------------------------------------------------------

def gzip6_ratio(data_dir, sample=16 * MiB, chunk=2 * MiB):
    """(bytes in, in/out of gzip -6) over chunks of the largest files."""
    paths = sorted(data_files(data_dir), key=lambda p: -p[1])
    rnd = random.Random(3)
    picked = bytearray()
    for path, size in paths[:sample // chunk]:
        with open(path, 'rb') as f:
            f.seek(rnd.randrange(max(1, size - chunk)))
            picked += f.read(chunk)
    return len(picked), len(picked) / _gzip6_size(bytes(picked))


def _gzip6_size(data):
    if shutil.which('gzip'):
        return len(subprocess.run(['gzip', '-6', '-c'], input=data,
                                  stdout=subprocess.PIPE, check=True).stdout)
    return len(gzip.compress(data, compresslevel=6))


def sample_json_ratio(seed=7, count=2000):
    """gzip -6 ratio and mean size of freshly generated raw documents."""
    vocab = Vocabulary(seed)
    raw = bytearray()
    for name, kind, auto_id, _share in DATABASES:
        db = Database(name, kind, auto_id, 0, 1, vocab, seed, 1)
        for _ in range(count // len(DATABASES)):
            raw += json.dumps(db.gen.document(),
                              separators=(',', ':')).encode() + b'\n'
    docs = count // len(DATABASES) * len(DATABASES)
    return len(raw) / docs, len(raw) / _gzip6_size(bytes(raw))


def report(data_dir, counts, files, stats, size, log=print):
    kinds = sizes_by_kind(data_dir)
    total = sum(n for _c, n in kinds.values())
    log('CouchDB %s, file_compression = %s; data directory %s: %d files, '
        '%s (%d bytes; asked %d, %+.1f%%)' % (
            stats['version'], stats['file_compression'], data_dir, files,
            _mib(total), total, size, 100.0 * (total - size) / size))
    for kind in ('database', 'view', 'system', 'other'):
        count, nbytes = kinds.get(kind, (0, 0))
        log('  %-8s %4d files %10s  %5.1f%%' % (
            kind, count, _mib(nbytes), 100.0 * nbytes / max(total, 1)))
    docs = sum(counts.values())
    log('documents: %d in %d databases (%d updated once)' % (
        docs, len(counts), stats['updates']))
    log('  ' + ', '.join('%s %d' % item for item in sorted(
        counts.items(), key=lambda kv: -kv[1])))
    load = stats.get('load_seconds', 0) or 1e-9
    log('time: %.1f s in all (loading %.1f s, views %.1f s, stop %.1f s); '
        'load rate %.1f MB/s of data directory, %.1f MB/s of JSON '
        '(%d requests)' % (
            stats['seconds'], load, stats['view_seconds'],
            stats['stop_seconds'], (total - kinds.get('view', [0, 0])[1])
            / load / MB, stats['json_bytes'] / load / MB,
            stats['requests']))
    log('CPU while loading and building views: this process %.1f s, '
        'CouchDB %.1f s' % (stats['python_cpu'], stats['couchdb_cpu']))
    sample, ratio = gzip6_ratio(data_dir)
    log('gzip -6 ratio of a %.1f MiB sample of the largest files: %.2fx' % (
        sample / MiB, ratio))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=parse_size, default=256 * MiB,
                        help='data directory size (default 256MiB)')
    parser.add_argument('--workdir', help='where to build (default: a new '
                        'temporary directory, removed unless --keep)')
    parser.add_argument('--keep', action='store_true',
                        help='keep the temporary directory')
    parser.add_argument('--seed', type=int, default=7)
    parser.add_argument('--threads', type=int, default=THREADS)
    parser.add_argument('--batch', type=int, default=BATCH)
    parser.add_argument('--views-early', action='store_true',
                        default=VIEWS_EARLY,
                        help='create the design documents before loading: '
                        'CouchDB indexes while the documents arrive')
    return parser.parse_args(argv)


def _terminate(signum, _frame):
    """SIGTERM, SIGHUP: unwind (the node stops in a finally), once."""
    signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    avg, ratio = sample_json_ratio(args.seed)
    print('raw documents: %.0f bytes on average, gzip -6 ratio %.2fx' % (
        avg, ratio), flush=True)
    temporary = args.workdir is None
    workdir = args.workdir or tempfile.mkdtemp(prefix='bench-couchdb-data-')
    try:
        def log(line):
            print(line, flush=True)

        data_dir, counts, files, stats = _build(
            workdir, args.size, args.seed, log, args.threads, args.batch,
            args.views_early)
        report(data_dir, counts, files, stats, args.size, log)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif temporary:
            print('kept', workdir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
