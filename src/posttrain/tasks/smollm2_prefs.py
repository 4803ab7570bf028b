"""The shipped instruction-following preference pairs (`tasks/data/smollm2_prefs.jsonl`, `builtin:smollm2-prefs`).

Each prompt is a plain question plus one checkable instruction ("Answer in one word.", "Reply in ALL
CAPS.", "Give exactly three items separated by commas.", ...). The chosen response follows it; the
rejected one gives the same, correct content but ignores it, so a pair differs in instruction
following only. Rows are TRL's conversational preference format plus an "instruction" field naming
the instruction, which `follows` checks:

    {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}],
     "rejected": [{"role": "assistant", ...}], "instruction": "one_word"}

Made from the small fact tables below, seeded, so the file is reproducible:

    python -m posttrain.tasks.smollm2_prefs > src/posttrain/tasks/data/smollm2_prefs.jsonl

Responses stay under ~40 SmolLM2 tokens so a CPU run of DPO is quick.
"""

from __future__ import annotations

import json
import random
import re
import sys
from dataclasses import dataclass
from typing import Callable

PER_INSTRUCTION = 30  # pairs per instruction: 10 instructions -> 300 pairs
SEED = 0

# (question, one-word answer, the answer as a sentence)
WORD_FACTS = [
    ("What is the capital of France?", "Paris", "The capital of France is Paris."),
    ("What is the capital of Japan?", "Tokyo", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy?", "Rome", "The capital of Italy is Rome."),
    ("What is the capital of Spain?", "Madrid", "The capital of Spain is Madrid."),
    ("What is the capital of Germany?", "Berlin", "The capital of Germany is Berlin."),
    ("What is the capital of Egypt?", "Cairo", "The capital of Egypt is Cairo."),
    ("What is the capital of Canada?", "Ottawa", "The capital of Canada is Ottawa."),
    ("What is the capital of Australia?", "Canberra", "The capital of Australia is Canberra."),
    ("What is the capital of Kenya?", "Nairobi", "The capital of Kenya is Nairobi."),
    ("What is the capital of Norway?", "Oslo", "The capital of Norway is Oslo."),
    ("What is the capital of Peru?", "Lima", "The capital of Peru is Lima."),
    ("What is the capital of Greece?", "Athens", "The capital of Greece is Athens."),
    ("What is the capital of Portugal?", "Lisbon", "The capital of Portugal is Lisbon."),
    ("What is the capital of Ireland?", "Dublin", "The capital of Ireland is Dublin."),
    ("What colour is a ripe banana?", "Yellow", "A ripe banana is yellow."),
    ("What colour is fresh grass?", "Green", "Fresh grass is green."),
    ("What colour is fresh snow?", "White", "Fresh snow is white."),
    ("What is the largest planet in the solar system?", "Jupiter", "Jupiter is the largest planet in the solar system."),
    ("Which planet is closest to the Sun?", "Mercury", "Mercury is the planet closest to the Sun."),
    ("Which planet is known as the Red Planet?", "Mars", "Mars is known as the Red Planet."),
    ("What is the largest ocean on Earth?", "Pacific", "The Pacific Ocean is the largest ocean on Earth."),
    ("What is frozen water called?", "Ice", "Frozen water is called ice."),
    ("Who wrote Romeo and Juliet?", "Shakespeare", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the chemical symbol for gold?", "Au", "The chemical symbol for gold is Au."),
    ("What is the chemical symbol for iron?", "Fe", "The chemical symbol for iron is Fe."),
    ("Which language is mainly spoken in Brazil?", "Portuguese", "Most people in Brazil speak Portuguese."),
    ("Which language is mainly spoken in Mexico?", "Spanish", "Most people in Mexico speak Spanish."),
    ("What is the opposite of hot?", "Cold", "The opposite of hot is cold."),
    ("Which season comes after winter?", "Spring", "Spring is the season that comes after winter."),
    ("What do bees make?", "Honey", "Bees make honey from the nectar of flowers."),
    ("What is the tallest animal?", "Giraffe", "The giraffe is the tallest animal."),
    ("What is the fastest land animal?", "Cheetah", "The cheetah is the fastest land animal."),
    ("Which metal is liquid at room temperature?", "Mercury", "Mercury is a metal that is liquid at room temperature."),
    ("What is a baby cat called?", "Kitten", "A baby cat is called a kitten."),
    ("What is a baby dog called?", "Puppy", "A baby dog is called a puppy."),
    ("What is the main ingredient of guacamole?", "Avocado", "The main ingredient of guacamole is avocado."),
    ("Which instrument has 88 keys?", "Piano", "A standard piano has 88 keys."),
    ("Which organ pumps blood around the body?", "Heart", "The heart pumps blood around the body."),
    ("What is the currency of Japan?", "Yen", "The currency of Japan is the yen."),
    ("On which continent is Egypt?", "Africa", "Egypt is in Africa."),
    ("What is the hardest natural substance?", "Diamond", "Diamond is the hardest natural substance."),
]

# (question, the number, the answer as a sentence)
NUMBER_FACTS = [
    ("How many legs does a spider have?", 8, "A spider has eight legs."),
    ("How many days are in a week?", 7, "There are seven days in a week."),
    ("How many continents are there?", 7, "There are seven continents."),
    ("How many sides does a hexagon have?", 6, "A hexagon has six sides."),
    ("How many minutes are in an hour?", 60, "There are sixty minutes in an hour."),
    ("How many hours are in a day?", 24, "A day has twenty-four hours."),
    ("How many months are in a year?", 12, "A year has twelve months."),
    ("How many planets are in the solar system?", 8, "The solar system has eight planets."),
    ("How many legs does an insect have?", 6, "An insect has six legs."),
    ("How many strings does a standard guitar have?", 6, "A standard guitar has six strings."),
    ("How many players does a football team have on the pitch?", 11, "A football team has eleven players on the pitch."),
    ("How many days are in a leap year?", 366, "A leap year has 366 days."),
    ("At how many degrees Celsius does water boil at sea level?", 100, "At sea level water boils at 100 degrees Celsius."),
    ("At how many degrees Celsius does water freeze?", 0, "Water freezes at zero degrees Celsius."),
    ("How many keys does a standard piano have?", 88, "A standard piano has 88 keys."),
    ("How many bones are in the adult human body?", 206, "The adult human body has 206 bones."),
    ("How many degrees are in a right angle?", 90, "A right angle is 90 degrees."),
    ("How many degrees are in a full circle?", 360, "A full circle has 360 degrees."),
    ("How many weeks are in a year?", 52, "A year has 52 weeks."),
    ("How many centimetres are in a metre?", 100, "There are 100 centimetres in a metre."),
    ("How many grams are in a kilogram?", 1000, "There are 1000 grams in a kilogram."),
    ("How many letters are in the English alphabet?", 26, "The English alphabet has 26 letters."),
]

# (question, True for yes, the answer as a sentence that says neither yes nor no)
YES_NO_FACTS = [
    ("Is the Sun a star?", True, "The Sun is a star at the centre of our solar system."),
    ("Is the Pacific the largest ocean?", True, "The Pacific is the largest ocean on Earth."),
    ("Do penguins live at the North Pole?", False, "Penguins live in the Southern Hemisphere, not at the North Pole."),
    ("Is a tomato a fruit?", True, "Botanically, a tomato is a fruit because it holds seeds."),
    ("Can humans breathe underwater without equipment?", False, "Humans need equipment to breathe underwater."),
    ("Is water made of hydrogen and oxygen?", True, "Water is made of hydrogen and oxygen."),
    ("Is the Moon bigger than the Earth?", False, "The Moon is much smaller than the Earth."),
    ("Do spiders have six legs?", False, "Spiders have eight legs."),
    ("Is Tokyo the capital of Japan?", True, "Tokyo is the capital of Japan."),
    ("Is Sydney the capital of Australia?", False, "The capital of Australia is Canberra."),
    ("Is a whale a fish?", False, "A whale is a mammal that breathes air."),
    ("Does ice float on water?", True, "Ice floats because it is less dense than liquid water."),
    ("Is gold a metal?", True, "Gold is a soft, shiny metal."),
    ("Is the Amazon a river in Africa?", False, "The Amazon river flows through South America."),
    ("Is 7 a prime number?", True, "The number 7 is prime: only 1 and 7 divide it."),
    ("Is 9 a prime number?", False, "The number 9 is not prime, since 3 times 3 is 9."),
    ("Is 15 an even number?", False, "The number 15 is odd: dividing it by 2 leaves a remainder."),
    ("Is every square a rectangle?", True, "A square is a rectangle whose four sides are equal."),
    ("Does light travel faster than sound?", True, "Light travels much faster than sound."),
    ("Do plants need sunlight to make food?", True, "Plants use sunlight to make food through photosynthesis."),
    ("Is Venus the closest planet to the Sun?", False, "Mercury is the closest planet to the Sun."),
    ("Is Paris in Germany?", False, "Paris is the capital of France."),
    ("Is a kilometre longer than a mile?", False, "A mile is about 1.6 kilometres."),
    ("Is oxygen a gas at room temperature?", True, "Oxygen is a gas at room temperature."),
    ("Do bees make honey?", True, "Bees make honey from the nectar of flowers."),
    ("Is Mount Everest the highest mountain above sea level?", True, "Mount Everest is the highest mountain above sea level."),
    ("Is the Earth round?", True, "The Earth is roughly a sphere, slightly flattened at the poles."),
    ("Do fish breathe with lungs?", False, "Most fish breathe with gills, which take oxygen from the water."),
    ("Is the Nile in Africa?", True, "The Nile flows through north-eastern Africa into the Mediterranean Sea."),
    ("Is a spider an insect?", False, "A spider is an arachnid, with eight legs instead of an insect's six."),
    ("Does sound travel through a vacuum?", False, "Sound needs a medium such as air, so it cannot cross a vacuum."),
]

# (what to name three of, at least five examples)
CATEGORIES = [
    ("fruits", ["apple", "banana", "cherry", "mango", "pear", "orange", "grape"]),
    ("colours", ["red", "blue", "green", "yellow", "purple", "orange"]),
    ("planets", ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn"]),
    ("countries in Europe", ["France", "Spain", "Italy", "Germany", "Poland", "Norway"]),
    ("mammals", ["dog", "horse", "whale", "bat", "elephant"]),
    ("vegetables", ["carrot", "broccoli", "spinach", "onion", "pea"]),
    ("musical instruments", ["piano", "violin", "guitar", "drum", "flute"]),
    ("birds", ["eagle", "sparrow", "owl", "penguin", "parrot"]),
    ("sports", ["football", "tennis", "cricket", "basketball", "rugby"]),
    ("programming languages", ["Python", "Java", "Rust", "C", "Go"]),
    ("metals", ["iron", "copper", "gold", "silver", "tin"]),
    ("oceans", ["Pacific", "Atlantic", "Indian", "Arctic", "Southern"]),
    ("days of the week", ["Monday", "Tuesday", "Wednesday", "Friday", "Sunday"]),
    ("shapes", ["circle", "square", "triangle", "hexagon", "oval"]),
    ("capital cities", ["Paris", "Tokyo", "Cairo", "Lima", "Oslo"]),
    ("organs of the human body", ["heart", "liver", "kidney", "brain", "lung"]),
    ("languages", ["English", "French", "Arabic", "Hindi", "Spanish"]),
    ("kitchen tools", ["knife", "whisk", "spatula", "ladle", "grater"]),
    ("months of the year", ["January", "March", "May", "August", "October"]),
    ("insects", ["ant", "bee", "beetle", "butterfly", "grasshopper"]),
    ("vehicles", ["car", "bus", "bicycle", "train", "boat"]),
    ("flowers", ["rose", "tulip", "daisy", "lily", "sunflower"]),
    ("trees", ["oak", "pine", "birch", "maple", "willow"]),
    ("rivers", ["Nile", "Amazon", "Danube", "Thames", "Ganges"]),
    ("reptiles", ["snake", "lizard", "turtle", "crocodile", "gecko"]),
    ("board games", ["chess", "checkers", "Monopoly", "Scrabble", "backgammon"]),
]

# (question, answer in under 10 words, fuller answer of 15-30 words)
EXPLANATIONS = [
    ("Why is the sky blue?", "Air scatters blue sunlight more than other colours.",
     "The sky looks blue because the molecules in the air scatter the short blue wavelengths of sunlight "
     "much more strongly than the longer red ones."),
    ("Why do we have seasons?", "Earth's tilted axis changes how directly sunlight hits us.",
     "We have seasons because Earth's axis is tilted, so during the year each hemisphere leans toward or "
     "away from the Sun and gets more or less direct light."),
    ("What causes ocean tides?", "Mostly the Moon's gravity pulling on the oceans.",
     "Tides are caused mainly by the Moon's gravity pulling on Earth's oceans, with the Sun adding a "
     "smaller pull, so the sea rises and falls about twice a day."),
    ("How do plants make food?", "They turn sunlight, water and carbon dioxide into sugar.",
     "Plants make food by photosynthesis: their leaves capture sunlight and use its energy to turn water "
     "and carbon dioxide into sugar, releasing oxygen."),
    ("Why does ice float?", "Ice is less dense than liquid water.",
     "Ice floats because freezing locks water molecules into an open crystal pattern, which makes solid "
     "ice less dense than the liquid water around it."),
    ("What does the heart do?", "It pumps blood around the body.",
     "The heart is a muscle that pumps blood through the body, carrying oxygen and nutrients to the "
     "organs and returning used blood to the lungs."),
    ("Why do leaves change colour in autumn?", "Chlorophyll breaks down, revealing yellow and red pigments.",
     "In autumn trees stop making chlorophyll, the green pigment in leaves, so it breaks down and the "
     "yellow, orange and red pigments become visible."),
    ("What is gravity?", "The force that pulls masses toward each other.",
     "Gravity is the force of attraction between masses; it keeps us on the ground, holds the Moon in "
     "orbit and keeps Earth circling the Sun."),
    ("What is a volcano?", "An opening where molten rock escapes from underground.",
     "A volcano is an opening in Earth's crust where molten rock, ash and gases escape from deep "
     "underground, often building a mountain over many eruptions."),
    ("How does a rainbow form?", "Raindrops bend and split sunlight into colours.",
     "A rainbow forms when sunlight enters raindrops, bends, reflects off the back of each drop and "
     "splits into its colours, which we see as an arc."),
    ("Why is the sea salty?", "Rivers carry dissolved minerals from rocks into it.",
     "The sea is salty because rain slowly dissolves minerals from rocks on land, and rivers carry those "
     "salts into the ocean, where they build up over time."),
    ("What is an atom?", "The smallest unit of a chemical element.",
     "An atom is the smallest unit of a chemical element, made of a nucleus of protons and neutrons "
     "surrounded by a cloud of electrons."),
    ("What is democracy?", "Government in which citizens choose their leaders by voting.",
     "Democracy is a system of government in which citizens hold power, usually by voting in free "
     "elections to choose the leaders who make the laws."),
    ("Why do some birds migrate?", "To find food and milder weather each season.",
     "Many birds migrate because food becomes scarce and the weather harsh in winter, so they fly to "
     "warmer places and return in spring to breed."),
    ("What does a thermometer measure?", "It measures temperature.",
     "A thermometer measures temperature, showing how hot or cold something is, for example the air in "
     "a room, the water in a bath or a person's body."),
    ("Why do we need sleep?", "Sleep lets the body and brain rest and recover.",
     "We need sleep because it gives the body time to repair itself and lets the brain sort memories, "
     "so we can think clearly and stay healthy."),
    ("What is a desert?", "A very dry place with little rain.",
     "A desert is a region that receives very little rain, usually under 250 millimetres a year, so few "
     "plants grow there; deserts can be hot or cold."),
    ("Why does the Moon shine at night?", "It reflects light from the Sun.",
     "The Moon does not make its own light; it shines because its surface reflects sunlight back toward "
     "Earth, and we see the lit part change through the month."),
    ("Why do we see lightning before we hear thunder?", "Light travels much faster than sound.",
     "We see lightning first because light travels at about 300,000 kilometres per second, while the sound "
     "of thunder moves at only about 343 metres per second."),
    ("What is a noun?", "A word that names a person, place or thing.",
     "A noun is a word that names a person, place, thing or idea, such as 'teacher', 'London', 'table' or "
     "'happiness' in an ordinary sentence."),
    ("Why do we wear coats in winter?", "Coats trap warm air and keep us warm.",
     "We wear coats in winter because their thick layers trap warm air next to the body, slowing the loss "
     "of heat to the cold air outside."),
    ("What is the water cycle?", "Water evaporates, condenses into clouds and falls as rain.",
     "The water cycle is the constant movement of water: it evaporates from seas and lakes, condenses into "
     "clouds, falls as rain or snow and flows back again."),
    ("What do bees do for flowers?", "They carry pollen between flowers, helping them make seeds.",
     "Bees pollinate flowers: while collecting nectar they carry pollen from one flower to another, which "
     "lets the plants make seeds and fruit."),
    ("Why do we brush our teeth?", "To remove plaque and prevent tooth decay.",
     "We brush our teeth to remove plaque, a sticky film of bacteria that makes acids, which would "
     "otherwise damage the enamel and cause decay and gum disease."),
    ("What is a fraction?", "A number that represents part of a whole.",
     "A fraction is a number that represents part of a whole, written as a numerator over a denominator, "
     "such as 3/4 for three of four equal parts."),
    ("Why do ships float?", "They displace water equal to their own weight.",
     "A ship floats because its hull pushes aside a volume of water whose weight equals the ship's own "
     "weight, and its hollow shape keeps its average density low."),
]

FOLLOW_UPS = ["Would you like to know more?", "Shall I share another fact?", "Is there anything else you want to know?",
              "Want another example?", "What else are you curious about?"]


@dataclass(frozen=True)
class Instruction:
    """A checkable instruction: how prompts phrase it and whether a response follows it."""

    phrasings: tuple[str, ...]
    follows: Callable[[str], bool]


def _is_json_answer(response: str) -> bool:
    try:
        value = json.loads(response)
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and list(value) == ["answer"]


def _is_three_items(response: str) -> bool:
    items = [item.strip() for item in response.split(",")]
    return len(items) == 3 and all(item and len(item.split()) <= 3 and "." not in item for item in items)


INSTRUCTIONS: dict[str, Instruction] = {
    "one_word": Instruction(("Answer in one word.", "Reply with a single word.", "Use only one word."),
                            lambda r: len(r.split()) == 1),
    "all_caps": Instruction(("Reply in ALL CAPS.", "Write your whole answer in capital letters."),
                            lambda r: r == r.upper() and r != r.lower()),
    "lowercase": Instruction(("Reply in lowercase letters only.", "Do not use any capital letters."),
                             lambda r: r == r.lower()),
    "number_only": Instruction(("Answer with a number only.", "Reply with just the number, in digits."),
                               lambda r: re.fullmatch(r"\d+", r) is not None),
    "yes_no_start": Instruction(('Start your answer with "Yes" or "No".', 'Begin with "Yes" or "No", then explain.'),
                                lambda r: re.match(r"(Yes|No)\b", r) is not None and len(r.split()) > 1),
    "yes_no_only": Instruction(('Answer only "Yes" or "No".', "Reply with a single Yes or No and nothing else."),
                               lambda r: r in ("Yes", "No")),
    "three_items": Instruction(("Give exactly three, separated by commas.",
                                "List exactly three items, separated by commas, and nothing else."), _is_three_items),
    "under_ten_words": Instruction(("Reply in under 10 words.", "Keep your answer shorter than ten words."),
                                   lambda r: len(r.split()) < 10),
    "end_question": Instruction(("End your reply with a question.", "Finish your answer by asking me a question."),
                                lambda r: r.endswith("?")),
    "json_answer": Instruction(('Reply as JSON with a single key "answer".', 'Answer in JSON: {"answer": ...}.'),
                               _is_json_answer),
}


def follows(instruction: str, response: str) -> bool:
    """Whether `response` follows the instruction named `instruction` (a key of INSTRUCTIONS)."""
    return INSTRUCTIONS[instruction].follows(response)


def _yes_no(answer: bool) -> str:
    return "Yes" if answer else "No"


def _candidates(rng: random.Random) -> dict[str, list[tuple[str, str, str]]]:
    """Every (question, chosen, rejected) each instruction can be paired with."""
    sentences = [(q, s) for q, _, s in WORD_FACTS] + [(q, f"{_yes_no(y)}. {s}") for q, y, s in YES_NO_FACTS]
    sums = [(a, b) for a in range(2, 13) for b in range(2, 13)]
    arithmetic = [(f"What is {a} times {b}?", a * b, f"{a} times {b} is {a * b}.") for a, b in rng.sample(sums, 12)]
    three = []
    for category, examples in CATEGORIES:
        picked = rng.sample(examples, 3)
        sentence = f"Some {category} are {', '.join(examples[:-1])} and {examples[-1]}."
        three.append((f"Name three {category}.", ", ".join(picked), sentence))
    return {
        "one_word": [(q, w, s) for q, w, s in WORD_FACTS],
        "all_caps": [(q, s.upper(), s) for q, s in sentences],
        "lowercase": [(q, s.lower(), s) for q, s in sentences],
        "number_only": [(q, str(n), s) for q, n, s in NUMBER_FACTS + arithmetic],
        "yes_no_start": [(q, f"{_yes_no(y)}. {s}", s) for q, y, s in YES_NO_FACTS],
        "yes_no_only": [(q, _yes_no(y), f"{_yes_no(y)}. {s}") for q, y, s in YES_NO_FACTS],
        "three_items": three,
        "under_ten_words": [(q, short, long) for q, short, long in EXPLANATIONS],
        "end_question": [(q, f"{s} {rng.choice(FOLLOW_UPS)}", s) for q, s in sentences],
        "json_answer": [(q, json.dumps({"answer": w}), s) for q, w, s in WORD_FACTS],
    }


def rows(seed: int = SEED, per_instruction: int = PER_INSTRUCTION) -> list[dict]:
    """The preference rows, shuffled: up to `per_instruction` pairs for each instruction."""
    rng = random.Random(seed)
    out = []
    for name, candidates in _candidates(rng).items():
        phrasings = INSTRUCTIONS[name].phrasings
        for question, chosen, rejected in rng.sample(candidates, min(per_instruction, len(candidates))):
            instruction = rng.choice(phrasings)
            prompt = f"{question} {instruction}" if rng.random() < 0.7 else f"{instruction} {question}"
            out.append({"prompt": [{"role": "user", "content": prompt}],
                        "chosen": [{"role": "assistant", "content": chosen}],
                        "rejected": [{"role": "assistant", "content": rejected}],
                        "instruction": name})
    rng.shuffle(out)
    return out


def main() -> None:
    sys.stdout.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows())


if __name__ == "__main__":
    main()
