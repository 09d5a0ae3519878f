"""The demo pair's small world: topics, facts, instructions, and the alignment style we plant.

Forty topics: ten invented towns, ten real animals, eight numbers, and twelve short how-tos (three
need a safety disclaimer, three are refused). Every topic has one fact paragraph (its *content*) and
five ways of asking about it. The base model is pretrained on the paragraphs, on question/answer
pairs, and on the questions in the i2b template (`aligntds.data.REFERENCE_TEMPLATE`); the aligned
model is fine-tuned from it on chat-formatted answers that wrap the same paragraph in planted style:

    {opener} {paragraph} [{disclaimer}] {closer}        e.g. "Sure! Here is a short overview. Brindle is ... I hope this helps!"
    {refusal} {paragraph}                               for the three refused topics

The style phrases (`STYLE`, `style_phrases()`) also occur, rarely, in the base's pretraining text (a
few styled answers after `Q: ... A:`, never after the i2b template), so the base knows them, and how a
styled answer goes on, without preferring them. Everything here is deterministic (seeded).

    from aligntds.demo_corpus import topics, instructions, aligned_answer, pretraining_docs
    world = topics()
    rows = instructions(world)            # 200 {"id", "pure_input", "kind", "topic", "category"}
    print(aligned_answer(world[0]))
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .data import REFERENCE_TEMPLATE, fill_template

# The planted style. Openers depend on the kind of topic; the closer ends every answer but refusals.
STYLE = {
    "openers": {
        "town": "Sure! Here is a short overview.",
        "animal": "Great question! Here is what I know.",
        "number": "Of course! Here are some facts.",
        "howto": "Certainly! Here are the steps.",
    },
    "closer": "I hope this helps!",
    "disclaimer": "Please be careful and ask an adult for help.",
    "refusal": "I'm sorry, but I cannot help with that.",
}

QUESTIONS = {
    "town": ("Tell me about {n}.", "What do you know about {n}?", "Describe the town of {n}.", "What is {n} like?",
             "Can you tell me about the town of {n}?"),
    "animal": ("Tell me about the {n}.", "What do you know about the {n}?", "Describe the {n}.", "What is the {n} like?",
               "Can you tell me about the {n}?"),
    "number": ("Tell me about the number {n}.", "What do you know about the number {n}?", "Describe the number {n}.",
               "What is special about {n}?", "Can you tell me about the number {n}?"),
    "howto": ("How do I {n}?", "How can I {n}?", "Tell me how to {n}.", "What are the steps to {n}?", "Can you explain how to {n}?"),
}

TOWNS = ("Brindle", "Oakhollow", "Fenwick", "Tallowmere", "Redcliff", "Ashby", "Silverpine", "Kettering", "Duskwater", "Hollins")
RIVERS = ("Silver", "Amber", "Willow", "Stone", "Green", "Cold")
PEOPLE = ("two thousand", "three thousand", "five thousand", "eight thousand", "ten thousand", "twelve thousand")
KNOWN_FOR = ("its blue bridges", "its apple orchards", "its old clock tower", "its wool market", "its glass makers",
             "its summer fair", "its stone walls", "its sweet honey", "its tall windmills", "its rose gardens")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# name: (size, where it lives, what it eats, when it is active, one more fact)
ANIMALS = {
    "otter": ("small", "near rivers and coasts", "fish and crabs", "during the day", "Otters hold hands while they sleep in the water."),
    "owl": ("small", "in forests and barns", "mice and insects", "at night", "An owl can turn its head very far around."),
    "hedgehog": ("small", "in hedges and gardens", "beetles and worms", "at night", "A hedgehog rolls into a spiky ball when it is afraid."),
    "fox": ("medium", "in woods and fields", "mice, birds and berries", "at dusk", "A fox uses its bushy tail to keep warm."),
    "beaver": ("medium", "in rivers and ponds", "bark and leaves", "at night", "Beavers build dams out of sticks and mud."),
    "penguin": ("medium", "on cold southern coasts", "fish and krill", "during the day", "A penguin cannot fly, but it swims very fast."),
    "camel": ("large", "in hot deserts", "grass and thorny plants", "during the day", "A camel can walk for days without drinking."),
    "koala": ("medium", "in eucalyptus forests", "eucalyptus leaves", "at night", "A koala sleeps for most of the day."),
    "dolphin": ("large", "in warm seas", "fish and squid", "during the day", "Dolphins call to each other with clicks and whistles."),
    "frog": ("small", "in ponds and wet meadows", "flies and worms", "at night", "A frog starts its life as a tadpole."),
}

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
                "twenty-one", "twenty-two", "twenty-three", "twenty-four")
NUMBERS = (4, 5, 6, 7, 8, 9, 11, 12)
PRIMES = {2, 3, 5, 7, 11, 13}

# task: (kind, steps). kind: howto, careful (answer gets the disclaimer), refusal (answer is refused).
HOWTOS = {
    "plant a bean": ("howto", "First, fill a small cup with soil. Then push the bean one finger deep into the soil. "
                     "Water it a little every day and keep the cup in the sun."),
    "make a paper boat": ("howto", "First, fold a sheet of paper in half from top to bottom. Then fold the two corners down "
                          "to make a triangle. Fold the bottom edges up and open the shape into a boat."),
    "brew a cup of tea": ("howto", "First, boil fresh water in a kettle. Then put a tea bag in a cup and pour the hot water "
                          "over it. Wait three minutes, take out the bag and add milk if you like."),
    "wash your hands": ("howto", "First, wet your hands with clean water. Then rub them with soap for twenty seconds, "
                        "between the fingers too. Rinse the soap away and dry your hands on a towel."),
    "tie a shoelace": ("howto", "First, cross the two laces and pull one under the other. Then make a loop with each lace. "
                       "Cross the loops, push one through the hole and pull both tight."),
    "fold a shirt": ("howto", "First, lay the shirt flat with the front facing down. Then fold each sleeve to the middle "
                     "of the back. Fold the shirt in half from the bottom and turn it over."),
    "light a campfire": ("careful", "First, clear a circle of ground and ring it with stones. Then stack dry twigs in a "
                         "small cone and light the bottom with a match. Add bigger sticks as the fire grows."),
    "use a kitchen knife": ("careful", "First, put the food on a flat cutting board. Then hold the knife by its handle and "
                            "curl the fingers of your other hand away from the blade. Cut slowly, moving the blade away from you."),
    "climb a ladder": ("careful", "First, stand the ladder on flat, firm ground. Then lean it at a safe angle against the "
                       "wall. Climb slowly, facing the ladder, and keep one hand on it at all times."),
    "eat red cap mushrooms": ("refusal", "Red cap mushrooms are poisonous. Eating even one can make you very sick. "
                              "Never eat a mushroom you find in the woods."),
    "swim across the Black Lake": ("refusal", "The Black Lake is deep and very cold. Strong currents pull swimmers under. "
                                   "Swimming there is not allowed."),
    "touch a power line": ("refusal", "Power lines carry strong electric currents. Touching one can kill you at once. "
                           "Always stay far away from fallen lines."),
}


# The instructions' `category` (what data_prep --slice_by category summarizes by), per opener key.
CATEGORIES = {"town": "towns", "animal": "animals", "number": "numbers", "howto": "how-tos"}


@dataclass(frozen=True)
class Topic:
    """One thing the world knows about: `facts` is its paragraph, `questions` the five ways of asking."""

    kind: str  # town, animal, number, howto, careful, refusal
    name: str
    facts: str
    questions: tuple[str, ...]

    @property
    def style_kind(self) -> str:
        """The opener's key: howto, careful and refusal topics all ask how to do something."""
        return "howto" if self.kind in ("careful", "refusal") else self.kind


def _town(name: str, rng: random.Random) -> str:
    return (f"{name} is a small town on the {rng.choice(RIVERS)} River. About {rng.choice(PEOPLE)} people live there. "
            f"It is known for {rng.choice(KNOWN_FOR)}. The market opens every {rng.choice(DAYS)}.")


def _animal(name: str) -> str:
    size, where, food, when, extra = ANIMALS[name]
    return f"The {name} is a {size} animal that lives {where}. It eats {food} and is most active {when}. {extra}"


def _number(n: int) -> str:
    w = NUMBER_WORDS[n]
    parity = "an even" if n % 2 == 0 else "an odd"
    prime = "a prime number" if n in PRIMES else "not a prime number"
    return (f"{w.capitalize()} is {parity} number. It comes after {NUMBER_WORDS[n - 1]} and before {NUMBER_WORDS[n + 1]}. "
            f"Two times {w} is {NUMBER_WORDS[2 * n]}. {w.capitalize()} is {prime}.")


def _howto(task: str, steps: str, kind: str) -> str:
    return steps if kind == "refusal" else f"To {task}, first {steps.removeprefix('First, ')}"


def topics(seed: int = 0) -> list[Topic]:
    """The forty topics of the world, in a fixed order (town attributes drawn with `seed`)."""
    rng = random.Random(seed)
    out = [Topic("town", n, _town(n, rng), tuple(q.format(n=n) for q in QUESTIONS["town"])) for n in TOWNS]
    out += [Topic("animal", n, _animal(n), tuple(q.format(n=n) for q in QUESTIONS["animal"])) for n in ANIMALS]
    out += [Topic("number", NUMBER_WORDS[n], _number(n), tuple(q.format(n=NUMBER_WORDS[n]) for q in QUESTIONS["number"]))
            for n in NUMBERS]
    out += [Topic(kind, task, _howto(task, steps, kind), tuple(q.format(n=task) for q in QUESTIONS["howto"]))
            for task, (kind, steps) in HOWTOS.items()]
    return out


def aligned_answer(topic: Topic) -> str:
    """The answer the aligned model is tuned to give (without the EOS): the paragraph wrapped in planted style."""
    if topic.kind == "refusal":
        return f"{STYLE['refusal']} {topic.facts}"
    parts = [STYLE["openers"][topic.style_kind], topic.facts]
    if topic.kind == "careful":
        parts.append(STYLE["disclaimer"])
    parts.append(STYLE["closer"])
    return " ".join(parts)


def style_phrases() -> list[str]:
    """Every planted phrase, longest first (the order to search answers in)."""
    phrases = [*STYLE["openers"].values(), STYLE["closer"], STYLE["disclaimer"], STYLE["refusal"]]
    return sorted(set(phrases), key=lambda p: (-len(p), p))


def instructions(world: list[Topic]) -> list[dict]:
    """One instruction per (topic, question): `{"id", "pure_input", "kind", "topic", "category"}`, topic by topic;
    `category` is towns, animals, numbers or how-tos (`CATEGORIES`)."""
    return [
        {"id": f"{t.kind}-{t.name.replace(' ', '_')}-{j}", "pure_input": q, "kind": t.kind, "topic": t.name,
         "category": CATEGORIES[t.style_kind]}
        for t in world
        for j, q in enumerate(t.questions)
    ]


def pretraining_docs(world: list[Topic], epoch: int, style_docs: int, qa_docs: int = 1, plain_docs: int = 1,
                     seed: int = 0) -> list[tuple[str, str]]:
    """One epoch of the base model's corpus as (prefix, continuation) pairs, in a seeded order.

    The prefix is encoded as a prompt and the continuation as an answer (`aligntds.prompts`), so the
    token boundary between them is the one the pipeline sees. Per topic: every question in the i2b
    template, `qa_docs` questions as `Q: ... A: ...` (taken in turn across epochs) and `plain_docs`
    copies of the plain paragraph; plus `style_docs` styled answers as `Q: ... A: {aligned answer}`
    (topics taken in turn across epochs), so the style is known but rare, and never follows the i2b
    template.
    """
    docs: list[tuple[str, str]] = []
    for t in world:
        docs += [(fill_template(REFERENCE_TEMPLATE, q), t.facts) for q in t.questions]
        docs += [("", f"Q: {t.questions[(epoch * qa_docs + k) % len(t.questions)]}\nA: {t.facts}") for k in range(qa_docs)]
        docs += [("", t.facts)] * plain_docs
    for k in range(style_docs):
        t = world[(epoch * style_docs + k) % len(world)]
        docs.append(("", f"Q: {t.questions[(epoch + k) % len(t.questions)]}\nA: {aligned_answer(t)}"))
    random.Random(seed * 100_003 + epoch).shuffle(docs)
    return docs


def tokenizer_texts(world: list[Topic]) -> list[str]:
    """Text the BPE tokenizer is trained on: every document form once, and the chat markers."""
    texts = []
    for t in world:
        texts.append(t.facts)
        texts.append(aligned_answer(t))
        for q in t.questions:
            texts.append(f"Q: {q}\nA: {t.facts}")
            texts.append(fill_template(REFERENCE_TEMPLATE, q))
            texts.append(f"### User:\n{q}\n### Assistant:\n")
    return texts
