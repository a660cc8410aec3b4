"""The identity topic's messages (schemas/identity.py) as the processor acts on them: anonymous visitors
handed over to people, contacts kept with the people who have them, and merged ids found for erasure."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson
from msgspec.structs import replace

from schemas.encoding import from_plain, to_plain
from schemas.identity import ContactLink, ForgetMerged, Link, Merge
from schemas.privacy import ErasureRequest
from streams.rules.contacts import with_contact
from streams.rules.engine import absorb
from streams.rules.person import PersonState, SourcePosition
from streams.timers import utc_now

if TYPE_CHECKING:
    from streams.processing.processor import Processor

log = logging.getLogger(__name__)


def link(processor: Processor, anonymous_id: str, person_id: str) -> None:
    """Ask the anonymous id's partition to hand its state over to the person."""
    message = Link(anonymous_id=anonymous_id, person_id=person_id)
    processor.output.add(processor.settings.identity_topic, anonymous_id.encode(), message.to_json())


def handle(processor: Processor, message: Link | Merge | ContactLink | ForgetMerged, position: SourcePosition) -> None:
    """Apply one identity message in the partition it was read from; nothing for someone erased."""
    if isinstance(message, ForgetMerged):
        forget_merged(processor, message, position.partition)
        return
    if isinstance(message, Link):
        concerned = message.anonymous_id
    elif isinstance(message, ContactLink):
        concerned = message.contact_id
    else:
        concerned = message.person_id
    # Nobody erased comes back through an identity message either (the store relies on it).
    if processor.is_erased(position.partition, concerned):
        return
    if isinstance(message, Link):
        _hand_over(processor, message, position)
    elif isinstance(message, Merge):
        absorbed = from_plain(message.state, PersonState)
        state = processor.load(message.person_id.encode(), position.partition)
        step = absorb(state, absorbed, position, processor.rules, processor.settings.limits)
        processor.publish(step, position.partition, before=state)
    else:
        _link_contact(processor, message, position)


def _hand_over(processor: Processor, message: Link, position: SourcePosition) -> None:
    """Keyed by the anonymous id: send its state to the person, and leave a redirect behind."""
    anonymous = processor.load(message.anonymous_id.encode(), position.partition)
    if anonymous.already_applied(position) or anonymous.merged_into is not None:
        return
    merge = Merge(anonymous_id=message.anonymous_id, person_id=message.person_id, state=to_plain(anonymous))
    processor.output.add(processor.settings.identity_topic, message.person_id.encode(), merge.to_json())
    redirect = replace(
        PersonState.new(anonymous.person_id), merged_into=message.person_id, applied_offsets=anonymous.record(position)
    )
    processor.save(redirect, position.partition)
    log.info("identity: %s merges into %s", anonymous.person_id, message.person_id)


def _link_contact(processor: Processor, message: ContactLink, position: SourcePosition) -> None:
    """Keep the people who have this address or number; an opt-out that reached the contact before anybody
    had it is passed on to whoever comes to have it."""
    settings = processor.settings
    contact = processor.load(message.contact_id.encode(), position.partition)
    if contact.already_applied(position):
        return
    if message.op == "add":
        persons = with_contact(contact.contact_of, message.person_id, settings.limits.persons_per_contact)
    else:
        persons = [person for person in contact.contact_of if person != message.person_id]
    processor.save(
        replace(contact, contact_of=persons, applied_offsets=contact.record(position)),
        position.partition,
    )
    opted_out = [channel for channel, state in contact.profile.consent.items() if state == "opted_out"]
    if message.op == "add" and opted_out:
        consent = {
            "type": "identify",
            "userId": message.person_id,
            "messageId": f"contact-consent:{message.contact_id}:{position.offset}",
            "timestamp": (contact.profile.last_seen or utc_now()).isoformat(),
            "traits": {f"{channel}_consent": "opted_out" for channel in opted_out},
        }
        processor.output.add(settings.events_topic, message.person_id.encode(), orjson.dumps(consent))


def forget_merged(processor: Processor, message: ForgetMerged, partition: int) -> None:
    """Every anonymous id of this partition that was merged into the erased person is erased too, however
    many there were: each gets an erasure request of its own (for the sinks as well)."""
    if partition not in processor.owned:
        return
    marker = b'"merged_into":' + orjson.dumps(message.person_id)
    found = {key for key, stored in processor.store.stored_items(partition) if marker in stored}
    found.update(
        state.person_id.encode()
        for state in processor.store.unstored(partition)
        if state.merged_into == message.person_id
    )
    for key in sorted(found):
        request = ErasureRequest(
            request_id=message.request_id, person_id=key.decode(), requested_at=message.requested_at
        )
        processor.output.add(processor.settings.privacy_topic, key, request.to_json())
