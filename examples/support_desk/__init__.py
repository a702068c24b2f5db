"""Support desk: the τ²-bench retail domain as tether tools, policy rules and an agent.

Modules:

* :mod:`~examples.support_desk.data` -- where the retail data lives and how to load it.
* :mod:`~examples.support_desk.store` -- the transactional store (SQLite or PostgreSQL).
* :mod:`~examples.support_desk.domain` -- retail rules on plain records (tools and policy).
* :mod:`~examples.support_desk.tools` -- the retail tools.
* :mod:`~examples.support_desk.policy` -- the written policy as rules (``RULES``).
* :mod:`~examples.support_desk.oracle_direct` -- replays ground-truth actions through the tools.
* :mod:`~examples.support_desk.mutations` -- mutated ground-truth calls the rules must block.
* :mod:`~examples.support_desk.tickets` -- sample tickets and the ``TicketResult`` model.
* :mod:`~examples.support_desk.agent` -- ``make_ticket_agent()``.
"""
